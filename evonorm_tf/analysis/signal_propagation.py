"""Signal propagation plots: how activation statistics evolve with depth in a residual network.

At the end of every residual block, on one batch (random or given):

- average channel squared mean: the mean over channels of (mean over N, H, W)²;
- average channel variance: the mean over channels of the variance over N, H, W;
- residual average channel variance: the same variance for the residual
  branch just before it is added to the skip path.

A network that needs no normalization keeps the channel means near zero and
the variance growing slowly and predictably; an unnormalized ReLU ResNet
shows a mean shift (squared means growing with depth); a BN ResNet resets
each residual branch to unit variance.

Works on every backbone of this package (`NormActResNet` in both forms,
`NFResNet`, `NormActEfficientNet`) without hooks: it finds the residual
merges (`tf_keras.layers.Add` or `ScaledResidualAdd` layers, whose first
input is the residual branch) in the functional graph and builds a
sub-model whose outputs are the block outputs and the branches.

    python -m evonorm_tf.analysis.signal_propagation \\
        --backbone nf_resnet56 --backbone resnet56:bn_relu --backbone resnet56:none \\
        --output spp.png

Reference: Brock, De, Smith. Characterizing signal propagation to close the
performance gap in unnormalized ResNets. arXiv:2101.08692 (§2).
"""

import collections
import os
import re

import numpy as np
import tensorflow as tf
import tf_keras

from evonorm_tf import command_line
from evonorm_tf.factory import NORM_ACT_NAMES
from evonorm_tf.modeling.backbones import nf_resnet, resnet
from evonorm_tf.modeling.layers.residual import ScaledResidualAdd
from evonorm_tf.modeling.norm_act import NormActFactory

SignalPropagation = collections.namedtuple(
    "SignalPropagation", ["block_names", "squared_mean", "variance", "residual_variance"]
)
SignalPropagation.__doc__ = """Per-residual-block statistics, each a float64 array of length `blocks`."""

ResidualBlock = collections.namedtuple("ResidualBlock", ["name", "output", "branch"])

_MERGE_TYPES = (tf_keras.layers.Add, ScaledResidualAdd)


def _find_residual_model(model):
    """The functional model holding the residual merges (the backbone inside a classifier)."""
    if any(isinstance(layer, _MERGE_TYPES) for layer in model.layers):
        return model
    for layer in model.layers:
        if isinstance(layer, tf_keras.Model):
            found = _find_residual_model(layer)
            if found is not None:
                return found
    return None


def residual_blocks(model):
    """`(functional_model, [ResidualBlock(name, output tensor, branch tensor), ...])` in depth order.

    The block output is the merge's output, or, for post-activation (v1.5)
    ResNets, that of the activation layer `{block}_out` after it.
    """
    backbone = _find_residual_model(model)
    if backbone is None:
        raise ValueError(f"model {model.name!r} has no residual merge (Add) layers to analyse")
    names = {layer.name for layer in backbone.layers}
    blocks = []
    for layer in backbone.layers:
        if not isinstance(layer, _MERGE_TYPES):
            continue
        block_name = re.sub(r"_add$", "", layer.name)
        output = layer.output
        if f"{block_name}_out" in names:
            output = backbone.get_layer(f"{block_name}_out").output
        blocks.append(ResidualBlock(block_name, output, layer.input[0]))
    return backbone, blocks


def _channel_statistics(x, channel_axis):
    x = np.moveaxis(np.asarray(x, np.float64), channel_axis, -1).reshape(-1, np.shape(x)[channel_axis])
    return np.mean(x.mean(axis=0) ** 2), np.mean(x.var(axis=0))


def signal_propagation(model, inputs=None, batch_size=16, seed=0, training=False):
    """Statistics at the end of every residual block of `model` on one batch.

    Args:
      model: a backbone of this package or a classifier wrapping one.
      inputs: an input batch; default a standard normal batch of
        `batch_size` examples shaped as the model's input.
      batch_size, seed: of the random batch.
      training: the `training` flag of the forward pass (BN layers use batch
        statistics when True; at initialization their moving statistics are
        the identity, so use True to see what training sees).

    Returns:
      A `SignalPropagation`.
    """
    backbone, blocks = residual_blocks(model)
    if inputs is None:
        shape = backbone.input_shape[1:]
        if any(size is None for size in shape):
            raise ValueError(f"give inputs: the model input shape {backbone.input_shape} is not fully known")
        inputs = np.random.default_rng(seed).standard_normal((batch_size, *shape)).astype(np.float32)
    probe = tf_keras.Model(
        backbone.inputs, [[block.output for block in blocks], [block.branch for block in blocks]]
    )
    outputs, branches = probe(tf.convert_to_tensor(inputs), training=training)
    config = backbone.get_config() if hasattr(backbone, "get_config") else {}
    channel_axis = 1 if config.get("data_format") == "channels_first" else -1
    squared_mean, variance, residual_variance = [], [], []
    for output, branch in zip(outputs, branches):
        mean_square, var = _channel_statistics(output.numpy(), channel_axis)
        squared_mean.append(mean_square)
        variance.append(var)
        residual_variance.append(_channel_statistics(branch.numpy(), channel_axis)[1])
    return SignalPropagation(
        [block.name for block in blocks], np.array(squared_mean), np.array(variance),
        np.array(residual_variance),
    )


def plot_signal_propagation(results, path, title="Signal propagation at initialization"):
    """Draws the three panels versus depth, one line per model, and writes a PNG.

    Args:
      results: dict `{label: SignalPropagation}`.
      path: the output file (PNG).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    panels = (
        ("squared_mean", "Average channel squared mean", "mean over channels of (channel mean)²"),
        ("variance", "Average channel variance", "mean over channels of channel variance"),
        ("residual_variance", "Residual average channel variance",
         "residual branch: mean channel variance"),
    )
    for axis, (field, label, ylabel) in zip(axes, panels):
        for name, result in results.items():
            values = getattr(result, field)
            axis.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=name)
        axis.set_yscale("log")
        axis.set_xlabel("residual block (depth)")
        axis.set_ylabel(f"{ylabel} (log scale)")
        axis.set_title(label)
        axis.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(title)
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return path


def describe(label, result):
    """One line: the number of blocks and the range over blocks of each statistic."""
    def span(values):
        return f"{np.min(values):.3g}–{np.max(values):.3g}"

    return (f"{label}: {len(result.block_names)} blocks; over the blocks: squared mean {span(result.squared_mean)}, "
            f"variance {span(result.variance)}, residual variance {span(result.residual_variance)}")


# -- models named on the command line -----------------------------------------------


class UnnormalizedFactory(NormActFactory):
    """A stand-in norm-act factory with no normalization: ReLU, or the identity.

    With `build_resnet(..., norm_act=UnnormalizedFactory(), preactivation=True)`
    it gives the unnormalized ReLU ResNet of the signal-propagation baseline.
    """

    def __init__(self, data_format="channels_last"):  # pylint: disable=super-init-not-called
        self.name = "none"
        self.data_format = data_format
        self.options = {}
        self.accepted = ()
        self.ignored_options = []

    def __call__(self, channels, nonlinearity=True, zero_init=False, name=None):
        del channels, zero_init
        return tf_keras.layers.Activation("relu" if nonlinearity else "linear", name=name)

    def __repr__(self):
        return "UnnormalizedFactory()"


_BACKBONE_PATTERN = re.compile(r"^(nf_resnet|resnet)(\d+)(?::([a-z0-9_]+))?$")


def parse_backbone_name(spec):
    """`(family, depth, norm_act or None)` of a command-line name; ValueError naming a bad one."""
    match = _BACKBONE_PATTERN.match(spec.strip().lower())
    if not match:
        raise ValueError(
            f"backbone must look like nf_resnet20, resnet20:bn_relu or resnet20:none, received {spec!r}"
        )
    family, depth, norm_act = match.group(1), int(match.group(2)), match.group(3)
    if family == "nf_resnet" and norm_act:
        raise ValueError(f"nf_resnet takes no norm-act, received {spec!r}")
    if norm_act not in (None, "none") and norm_act not in NORM_ACT_NAMES:
        raise ValueError(
            f"unknown norm-act {norm_act!r} in backbone {spec!r}; valid: none, {', '.join(NORM_ACT_NAMES)}"
        )
    depths = nf_resnet.NF_RESNET_SPECS if family == "nf_resnet" else resnet.RESNET_SPECS
    if depth not in depths:
        raise ValueError(f"{family} depth {depth} in backbone {spec!r} is not one of {sorted(depths)}")
    return family, depth, norm_act


def build_backbone(spec, input_shape=(32, 32, 3)):
    """A backbone from a command-line name.

    `nf_resnet{depth}` (NF-ResNet, SkipInit gain 1 so branches contribute at
    init, no stochastic depth), `resnet{depth}:{norm_act}` (pre-activation `NormActResNet`, e.g.
    `resnet20:bn_relu`, `resnet56:evonorm_s0`) or `resnet{depth}:none`
    (unnormalized ReLU ResNet, He initialization).
    """
    family, depth, norm_act = parse_backbone_name(spec)
    if family == "nf_resnet":
        if norm_act:
            raise ValueError(f"nf_resnet takes no norm-act, received {spec!r}")
        return nf_resnet.build_nf_resnet(depth, input_shape=input_shape, skip_gain_init=1.0,
                                         stochastic_depth_drop_rate=0.0)
    if norm_act in (None, "none"):
        return resnet.build_resnet(
            depth, UnnormalizedFactory(), input_shape=input_shape, preactivation=True,
            kernel_initializer="he_normal",
        )
    return resnet.build_resnet(depth, norm_act, input_shape=input_shape, preactivation=True)


PROG = "python -m evonorm_tf.analysis.signal_propagation"


def main(argv=None):
    parser = command_line.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", action="append", required=True,
                        help="nf_resnet{depth}, resnet{depth}:{norm_act} or resnet{depth}:none; repeatable")
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for flag in ("batch_size", "image_size", "channels"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, received {getattr(args, flag)}")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        parser.error(f"--output={args.output!r}: the folder {folder!r} does not exist")
    for spec in args.backbone:  # every name is checked before the first model is built
        parse_backbone_name(spec)
    input_shape = (args.image_size, args.image_size, args.channels)
    inputs = np.random.default_rng(args.seed).standard_normal(
        (args.batch_size, *input_shape)).astype(np.float32)
    results = {}
    for spec in args.backbone:
        tf_keras.utils.set_random_seed(args.seed)
        model = build_backbone(spec, input_shape)
        results[spec] = signal_propagation(model, inputs, training=True)
        print(describe(spec, results[spec]))
    plot_signal_propagation(results, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    command_line.run(main, prog=PROG)
