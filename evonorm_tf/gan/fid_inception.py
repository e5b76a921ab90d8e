"""The Inception network of published FIDs (the 2015 graph's layout) in tf_keras.

FID (Heusel et al. 2017, arXiv:1706.08500) is computed with the 2015 Inception
graph (`inception-2015-12-05`, used by TTUR's `fid.py` and, converted, by
pytorch-fid). It is InceptionV3 with three differences from
`tf_keras.applications.InceptionV3`: the last block's pool branch *max*-pools
(Keras average-pools there), every batch norm has a learned scale, and the top
layer has 1008 logits. `fid_inception_model()` builds that layout with layer
names of torchvision's `Inception3` (pytorch-fid's FID network), so the public
weights file of pytorch-fid converts by name:

    # 1. Download (once, on a machine with internet; 91 MB):
    #    https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
    # 2. Convert (needs `pip install torch` for reading the file):
    python -m evonorm_tf.gan.fid_inception --pth pt_inception-2015-12-05-6726825d.pth \\
        --out fid_inception_2015.weights.h5
    # 3. Use: feature_network.type: inception_2015, weights_path: fid_inception_2015.weights.h5

`fid_inception_network(weights_path)` returns the feature network
(`images in [-1, 1] → (pool_3 features [N, 2048], logits [N, 1008])`, named
`inception_2015`). Images are resized bilinearly to 299x299 with half-pixel
centres (pytorch-fid's `F.interpolate(..., align_corners=False)`; TTUR feeds
the graph's own resize op). Values have been checked here only with random
weights (no weights file can be downloaded in this repository's tests).
"""

import argparse
import os
import sys

import numpy as np
import tensorflow as tf
import tf_keras

__all__ = ["convert_state_dict", "fid_inception_model", "fid_inception_network"]

NAME = "inception_2015"
INPUT_SIZE = 299
NUM_CLASSES = 1008
_BN_EPSILON = 1e-3


def _conv_bn(x, filters, kernel, name, strides=1, padding="same"):
    """torchvision `BasicConv2d`: conv (no bias) → BN (ε 1e-3, with scale) → ReLU."""
    x = tf_keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False,
                               name=f"{name}.conv")(x)
    x = tf_keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}.bn")(x)
    return tf_keras.layers.ReLU(name=f"{name}.relu")(x)


def _concat(tensors, name):
    return tf_keras.layers.Concatenate(name=name)(tensors)


def _block_a(x, pool_features, name):
    b1 = _conv_bn(x, 64, 1, f"{name}.branch1x1")
    b5 = _conv_bn(_conv_bn(x, 48, 1, f"{name}.branch5x5_1"), 64, 5, f"{name}.branch5x5_2")
    b3 = _conv_bn(x, 64, 1, f"{name}.branch3x3dbl_1")
    b3 = _conv_bn(_conv_bn(b3, 96, 3, f"{name}.branch3x3dbl_2"), 96, 3, f"{name}.branch3x3dbl_3")
    pool = tf_keras.layers.AveragePooling2D(3, 1, "same", name=f"{name}.avg_pool")(x)
    return _concat([b1, b5, b3, _conv_bn(pool, pool_features, 1, f"{name}.branch_pool")], name)


def _block_b(x, name):
    b3 = _conv_bn(x, 384, 3, f"{name}.branch3x3", strides=2, padding="valid")
    d = _conv_bn(_conv_bn(x, 64, 1, f"{name}.branch3x3dbl_1"), 96, 3, f"{name}.branch3x3dbl_2")
    d = _conv_bn(d, 96, 3, f"{name}.branch3x3dbl_3", strides=2, padding="valid")
    pool = tf_keras.layers.MaxPooling2D(3, 2, name=f"{name}.max_pool")(x)
    return _concat([b3, d, pool], name)


def _block_c(x, c7, name):
    b1 = _conv_bn(x, 192, 1, f"{name}.branch1x1")
    b7 = _conv_bn(x, c7, 1, f"{name}.branch7x7_1")
    b7 = _conv_bn(_conv_bn(b7, c7, (1, 7), f"{name}.branch7x7_2"), 192, (7, 1),
                  f"{name}.branch7x7_3")
    d = _conv_bn(x, c7, 1, f"{name}.branch7x7dbl_1")
    for index, (filters, kernel) in enumerate(
            [(c7, (7, 1)), (c7, (1, 7)), (c7, (7, 1)), (192, (1, 7))], start=2):
        d = _conv_bn(d, filters, kernel, f"{name}.branch7x7dbl_{index}")
    pool = tf_keras.layers.AveragePooling2D(3, 1, "same", name=f"{name}.avg_pool")(x)
    return _concat([b1, b7, d, _conv_bn(pool, 192, 1, f"{name}.branch_pool")], name)


def _block_d(x, name):
    b3 = _conv_bn(_conv_bn(x, 192, 1, f"{name}.branch3x3_1"), 320, 3, f"{name}.branch3x3_2",
                  strides=2, padding="valid")
    b7 = _conv_bn(x, 192, 1, f"{name}.branch7x7x3_1")
    b7 = _conv_bn(_conv_bn(b7, 192, (1, 7), f"{name}.branch7x7x3_2"), 192, (7, 1),
                  f"{name}.branch7x7x3_3")
    b7 = _conv_bn(b7, 192, 3, f"{name}.branch7x7x3_4", strides=2, padding="valid")
    pool = tf_keras.layers.MaxPooling2D(3, 2, name=f"{name}.max_pool")(x)
    return _concat([b3, b7, pool], name)


def _block_e(x, name, max_pool):
    """The last blocks; the 2015 graph max-pools in the last one (`max_pool=True`)."""
    b1 = _conv_bn(x, 320, 1, f"{name}.branch1x1")
    b3 = _conv_bn(x, 384, 1, f"{name}.branch3x3_1")
    b3 = _concat([_conv_bn(b3, 384, (1, 3), f"{name}.branch3x3_2a"),
                  _conv_bn(b3, 384, (3, 1), f"{name}.branch3x3_2b")], f"{name}.branch3x3")
    d = _conv_bn(_conv_bn(x, 448, 1, f"{name}.branch3x3dbl_1"), 384, 3, f"{name}.branch3x3dbl_2")
    d = _concat([_conv_bn(d, 384, (1, 3), f"{name}.branch3x3dbl_3a"),
                 _conv_bn(d, 384, (3, 1), f"{name}.branch3x3dbl_3b")], f"{name}.branch3x3dbl")
    if max_pool:
        pool = tf_keras.layers.MaxPooling2D(3, 1, "same", name=f"{name}.max_pool")(x)
    else:  # TF's 'same' average pooling excludes the padding (count_include_pad=False)
        pool = tf_keras.layers.AveragePooling2D(3, 1, "same", name=f"{name}.avg_pool")(x)
    return _concat([b1, b3, d, _conv_bn(pool, 192, 1, f"{name}.branch_pool")], name)


def fid_inception_model():
    """The 2015 FID Inception graph's layout: `[N, 299, 299, 3]` in [-1, 1] → (pool_3, logits).

    Randomly initialised; load converted weights with `load_weights`.
    """
    inputs = tf_keras.Input((INPUT_SIZE, INPUT_SIZE, 3))
    x = _conv_bn(inputs, 32, 3, "Conv2d_1a_3x3", strides=2, padding="valid")
    x = _conv_bn(x, 32, 3, "Conv2d_2a_3x3", padding="valid")
    x = _conv_bn(x, 64, 3, "Conv2d_2b_3x3")
    x = tf_keras.layers.MaxPooling2D(3, 2, name="maxpool1")(x)
    x = _conv_bn(x, 80, 1, "Conv2d_3b_1x1")
    x = _conv_bn(x, 192, 3, "Conv2d_4a_3x3", padding="valid")
    x = tf_keras.layers.MaxPooling2D(3, 2, name="maxpool2")(x)
    x = _block_a(x, 32, "Mixed_5b")
    x = _block_a(x, 64, "Mixed_5c")
    x = _block_a(x, 64, "Mixed_5d")
    x = _block_b(x, "Mixed_6a")
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        x = _block_c(x, c7, name)
    x = _block_d(x, "Mixed_7a")
    x = _block_e(x, "Mixed_7b", max_pool=False)
    x = _block_e(x, "Mixed_7c", max_pool=True)
    pool = tf_keras.layers.GlobalAveragePooling2D(name="pool_3")(x)
    logits = tf_keras.layers.Dense(NUM_CLASSES, name="fc")(pool)
    return tf_keras.Model(inputs, [pool, logits], name=NAME)


def convert_state_dict(state_dict, model=None):
    """Loads pytorch-fid's `FIDInceptionV3` state dict (name → array) into the Keras layout.

    Args:
      state_dict: mapping of torchvision `Inception3` names (`Mixed_5b.branch1x1.conv.weight`,
        `...bn.running_var`, `fc.weight`, ...) to NumPy arrays.
      model: a `fid_inception_model()` to fill; a new one when None.

    Returns:
      The model. Raises ValueError naming any missing, unused or misshapen entry.
    """
    model = model or fid_inception_model()
    state = {key: np.asarray(value) for key, value in state_dict.items()
             if not key.endswith("num_batches_tracked")}
    used = set()

    def take(key, shape):
        if key not in state:
            raise ValueError(f"state dict has no {key!r}")
        value = state[key]
        if value.shape != tuple(shape):
            raise ValueError(f"{key!r} has shape {value.shape}, expected {tuple(shape)}")
        used.add(key)
        return value

    for layer in model.layers:
        name = layer.name
        if isinstance(layer, tf_keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            layer.kernel.assign(take(f"{name}.weight", (cout, cin, kh, kw)).transpose(2, 3, 1, 0))
        elif isinstance(layer, tf_keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            for variable, suffix in ((layer.gamma, "weight"), (layer.beta, "bias"),
                                     (layer.moving_mean, "running_mean"),
                                     (layer.moving_variance, "running_var")):
                variable.assign(take(f"{name}.{suffix}", (channels,)))
        elif isinstance(layer, tf_keras.layers.Dense):
            inputs, outputs = layer.kernel.shape
            layer.kernel.assign(take("fc.weight", (outputs, inputs)).T)
            layer.bias.assign(take("fc.bias", (outputs,)))
    unused = sorted(set(state) - used)
    if unused:
        raise ValueError(f"state dict entries not in the FID Inception layout: {unused[:5]}"
                         f"{' ...' if len(unused) > 5 else ''}")
    return model


def fid_inception_network(weights_path):
    """The converted 2015 FID Inception as an `images in [-1, 1] → (pool_3, logits)` callable.

    Args:
      weights_path: a weights file written by this module's converter (or by
        `fid_inception_model().save_weights`). Nothing is downloaded; a
        missing file raises FileNotFoundError.
    """
    if weights_path is None or not os.path.isfile(str(weights_path)):
        raise FileNotFoundError(f"FID Inception weights file not found: {weights_path!r} "
                                f"(download and convert it as in evonorm_tf.gan.fid_inception)")
    model = fid_inception_model()
    model.load_weights(str(weights_path))
    return _network(model)


def _network(model):
    def network(images):
        images = tf.cast(images, tf.float32)
        if images.shape[-1] == 1:
            images = tf.repeat(images, 3, axis=-1)
        images = tf.image.resize(images, (INPUT_SIZE, INPUT_SIZE), method="bilinear")
        return model(images, training=False)

    network.model = model
    network.name = NAME
    return network


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Convert pytorch-fid's pt_inception-2015-12-05 weights to a tf_keras file.")
    parser.add_argument("--pth", required=True, help="pt_inception-2015-12-05-6726825d.pth")
    parser.add_argument("--out", required=True, help="output weights file (.weights.h5 or .h5)")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.pth):
        print(f"error: --pth {args.pth!r} is not a file", file=sys.stderr)
        return 2
    try:
        import torch  # only the converter needs it
    except ImportError:
        print("error: reading a .pth file needs PyTorch: pip install torch", file=sys.stderr)
        return 2
    state = torch.load(args.pth, map_location="cpu")
    model = convert_state_dict({key: value.numpy() for key, value in state.items()})
    model.save_weights(args.out)
    print(f"wrote {args.out} ({model.count_params():,} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
