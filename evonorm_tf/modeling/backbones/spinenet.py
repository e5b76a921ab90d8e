"""SpineNet backbones whose every normalization-activation is a chosen norm-act layer.

SpineNet (Du et al. 2020) is a scale-permuted network found by architecture
search: after a ResNet-like stem, 16 blocks run at levels (log2 of the stride)
in a learned order; each block sums two earlier blocks, resampled to its own
level and width, and the output blocks feed 1×1 endpoint convolutions at
levels 3…7. The architecture is data: `SPINENET_BLOCK_SPECS` (the searched
blocks) and `SPINENET_SCALING` (width, depth and resampling per model id).

Where Model Garden's `SpineNet` has BatchNormalization followed by its
activation, this backbone has one norm-act layer; where BN has no activation
(the projection shortcut, a residual branch's last norm, the last norm of a
resampling path), the norm-act is built with `nonlinearity=False` (plain BN,
or the affine map `x·γ + β` for an EvoNorm). `activation` stays after each
residual add and after each cross-scale sum, as in Model Garden's SpineNet
(and as the authors' EvoNorm ResNets keep the ReLU after the add). With
`bn_relu` the model has exactly the weights of Model Garden's `SpineNet` of
the same model id and input size.

Convolutions have no bias and carry `kernel_regularizer`; norm-act layers
never get one, so their weights are excluded from weight decay.

Reference: Du, Lin, Jin, Ghiasi, Tan, Cui, Le, Song. SpineNet: Learning
Scale-Permuted Backbone for Recognition and Localization. arXiv:1912.05027.
Liu, Brock, Simonyan, Le. Evolving Normalization-Activation Layers.
arXiv:2004.02967.
"""

import collections
import math

import tf_keras

from official.modeling import tf_utils
from official.vision.modeling.layers import nn_layers

from evonorm_tf import arguments
from evonorm_tf.modeling import classifier
from evonorm_tf.modeling import norm_act as norm_act_lib
from evonorm_tf.modeling.backbones import registration

# Filters of a block at each level before `filter_scale` (a bottleneck block
# outputs 4× as many). Level 2 is also the width of the two stem blocks.
LEVEL_FILTERS = {1: 32, 2: 64, 3: 128, 4: 256, 5: 256, 6: 256, 7: 256}

# One searched block: its level, its kind ("bottleneck": 1×1, 3×3, 1×1 with 4×
# outputs; "residual": two 3×3), the indices of its two parents in the list of
# all blocks so far (0 and 1 are the stem blocks), and whether it is an output.
BlockSpec = collections.namedtuple("BlockSpec", ["level", "block", "parents", "is_output"])

# The scale-permuted SpineNet-49 architecture (Du et al. 2020, Fig. 4).
SPINENET_BLOCK_SPECS = (
    BlockSpec(2, "bottleneck", (0, 1), False),
    BlockSpec(4, "residual", (0, 1), False),
    BlockSpec(3, "bottleneck", (2, 3), False),
    BlockSpec(4, "bottleneck", (2, 4), False),
    BlockSpec(6, "residual", (3, 5), False),
    BlockSpec(4, "bottleneck", (3, 5), False),
    BlockSpec(5, "residual", (6, 7), False),
    BlockSpec(7, "residual", (6, 8), False),
    BlockSpec(5, "bottleneck", (8, 9), False),
    BlockSpec(5, "bottleneck", (8, 10), False),
    BlockSpec(4, "bottleneck", (5, 10), True),
    BlockSpec(3, "bottleneck", (4, 10), True),
    BlockSpec(5, "bottleneck", (7, 12), True),
    BlockSpec(7, "bottleneck", (5, 14), True),
    BlockSpec(6, "bottleneck", (12, 14), True),
    BlockSpec(2, "bottleneck", (2, 13), True),
)

# endpoint_filters: channels of every output level; filter_scale: multiplies
# `LEVEL_FILTERS`; resample_alpha: a resampling path works at
# `alpha × (parent block filters)` channels; block_repeats: blocks per node.
SpineNetScaling = collections.namedtuple(
    "SpineNetScaling", ["endpoint_filters", "filter_scale", "resample_alpha", "block_repeats"]
)

SPINENET_SCALING = {
    "49S": SpineNetScaling(128, 0.65, 0.5, 1),
    "49": SpineNetScaling(256, 1.0, 0.5, 1),
    "96": SpineNetScaling(256, 1.0, 0.5, 2),
    "143": SpineNetScaling(256, 1.0, 1.0, 3),
    "143L": SpineNetScaling(256, 1.3, 1.0, 3),  # SpineNet-143 with 1.3× filters (Model Garden)
    "190": SpineNetScaling(512, 1.3, 1.0, 4),
}

_BOTTLENECK_EXPANSION = 4
_STEM_FILTERS = 64  # the 7×7 stem convolution; not scaled by filter_scale
_STEM_BLOCKS = 2
_OUTPUT_LEVELS = sorted({spec.level for spec in SPINENET_BLOCK_SPECS if spec.is_output})
_COARSEST_LEVEL = max(spec.level for spec in SPINENET_BLOCK_SPECS)


def _check_model_id(model_id):
    key = model_id if isinstance(model_id, str) else str(model_id)
    if isinstance(model_id, bool) or key not in SPINENET_SCALING:
        raise ValueError(
            f"model_id must be one of {list(SPINENET_SCALING)}, received model_id={model_id!r}"
        )
    return key


def _check_levels(min_level, max_level):
    for label, value in (("min_level", min_level), ("max_level", max_level)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{label} must be an integer, received {label}={value!r}")
    if not _OUTPUT_LEVELS[0] <= min_level <= max_level <= _OUTPUT_LEVELS[-1]:
        raise ValueError(
            f"need {_OUTPUT_LEVELS[0]} <= min_level <= max_level <= {_OUTPUT_LEVELS[-1]} "
            f"(SpineNet's output levels), received min_level={min_level!r}, max_level={max_level!r}"
        )
    return min_level, max_level


def _check_input_size(height, width):
    """Sizes for which every resampling path lands on its target shape.

    A multiple of 2**7 (the coarsest level) always works; a smaller power of
    two works when the input is square (levels 6 and 7 then share a width and
    are not resampled, as in Model Garden). Unknown sizes are not checked.
    """
    coarsest = 2**_COARSEST_LEVEL
    for label, size in (("height", height), ("width", width)):
        if size is not None and size % coarsest and size & (size - 1):
            raise ValueError(
                f"input {label} must be a multiple of {coarsest} or a power of two, received {label}={size}"
            )
    small = [size for size in (height, width) if size is not None and size % coarsest]
    if small and height != width:
        raise ValueError(
            f"an input smaller than {coarsest} must be square, received height={height}, width={width}"
        )


def _block_channels(block, filters):
    return filters * _BOTTLENECK_EXPANSION if block == "bottleneck" else filters


# A block of the network built so far: its output, its nominal width (ceil of
# input width / 2**level), its kind, and how many later blocks read it.
_Node = collections.namedtuple("_Node", ["tensor", "width", "block", "readers"])


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class NormActSpineNet(tf_keras.Model):
    """SpineNet with a pluggable norm-act layer.

    The model maps an image batch to a dict of feature maps `{level: tensor}`
    for levels `min_level`…`max_level` (keys `"3"`…`"7"` by default), each
    with `SPINENET_SCALING[model_id].endpoint_filters` channels, like Model
    Garden's SpineNet; `output_specs` gives their shapes.

    Layout: 7×7/2 stem convolution, norm-act, 3×3/2 max pooling; two
    bottleneck stem blocks at level 2; then one node per `SPINENET_BLOCK_SPECS`
    entry. A node resamples each of its two parents (1×1 convolution to
    `alpha ×` the parent's block filters + norm-act; to go down, a 3×3/2
    convolution + norm-act then 3×3/2 max pooling for each further halving;
    to go up, nearest-neighbour upsampling; a 1×1 convolution to the node's
    channels + norm-act with `nonlinearity=False`), sums them (an output node
    also adds every earlier block of its width and channels that nothing
    reads yet), applies `activation`, and runs `block_repeats` blocks. Each
    output level then gets a 1×1 convolution + norm-act.

    Widths follow Model Garden: the nominal width of level l is
    `ceil(input width / 2**l)`, with an input width of 128 when the input
    shape is not known; resampling compares these widths, so for inputs
    smaller than 128 two levels can share a width (then no resampling).
    Height and width must be multiples of 128, or equal and a power of two
    (e.g. 64×64); other sizes raise ValueError. Where Model Garden compares
    the static width of a tensor (never equal when the input shape is
    unknown), this backbone compares nominal widths, so an output node joins
    its unread blocks whether or not the input shape is known.

    Args:
      model_id: a key of `SPINENET_SCALING`: `"49S"`, `"49"`, `"96"`,
        `"143"`, `"143L"`, `"190"` (an int such as 49 is read as `"49"`).
        Default `"49"`.
      input_specs: a `tf_keras.layers.InputSpec` of the input, in
        `data_format` layout. Default `[None, None, None, 3]`.
      min_level, max_level: the output levels, within 2…7. Default 3 and 7.
      norm_act: a norm-act name of `evonorm_tf.NORM_ACT_NAMES` or a
        `NormActFactory`. Default `"evonorm_b0"`.
      norm_act_options: dict of norm-act options (`momentum`, `epsilon`,
        `groups`, `synchronized`); each layer receives those it accepts.
      stochastic_depth_drop_rate: drop rate of the last node's residual
        branches; node i of n uses `rate · i / n`, the stem blocks none (Model
        Garden's rule). Default 0.0.
      zero_init_residual: initialise γ of each residual branch's last norm to
        zeros (the authors' `init_zero=True`). Default False, as Model Garden.
      activation: the activation after each residual add and cross-scale sum.
        Default "relu".
      kernel_initializer: initializer of the convolution kernels.
      kernel_regularizer: regularizer of the convolution kernels (L2 weight
        decay); norm-act weights are never regularized.
      data_format: `"channels_last"` or `"channels_first"`; default
        `tf_keras.backend.image_data_format()`.

    Raises:
      ValueError: for an unknown `model_id`, levels outside 2…7, a drop rate
        outside [0, 1), or a bad norm-act name or option.

    Reference: arXiv:1912.05027 (SpineNet), arXiv:2004.02967 (EvoNorm).
    """

    def __init__(
        self,
        model_id="49",
        input_specs=None,
        min_level=3,
        max_level=7,
        norm_act="evonorm_b0",
        norm_act_options=None,
        stochastic_depth_drop_rate=0.0,
        zero_init_residual=False,
        activation="relu",
        kernel_initializer="VarianceScaling",
        kernel_regularizer=None,
        data_format=None,
        **kwargs,
    ):
        self._model_id = _check_model_id(model_id)
        self._min_level, self._max_level = _check_levels(min_level, max_level)
        if isinstance(stochastic_depth_drop_rate, bool) or not isinstance(
            stochastic_depth_drop_rate, (int, float)
        ) or not 0.0 <= stochastic_depth_drop_rate < 1.0:
            raise ValueError(
                "stochastic_depth_drop_rate must be in [0, 1), received "
                f"stochastic_depth_drop_rate={stochastic_depth_drop_rate!r}"
            )
        self._stochastic_depth_drop_rate = float(stochastic_depth_drop_rate)
        self._zero_init_residual = arguments.check_bool("zero_init_residual", zero_init_residual)
        self._data_format = arguments.check_data_format(
            data_format or tf_keras.backend.image_data_format()
        )
        self._norm_act = norm_act_lib.as_factory(
            norm_act, self._data_format, **(norm_act_options or {})
        )
        self._activation = activation
        self._kernel_initializer = kernel_initializer
        self._kernel_regularizer = kernel_regularizer
        self._input_specs = classifier.as_input_spec(input_specs)
        self._channel_axis = -1 if self._data_format == "channels_last" else 1
        self._scaling = SPINENET_SCALING[self._model_id]

        inputs = tf_keras.Input(shape=self._input_specs.shape[1:])
        shape = self._input_specs.shape
        height, width = shape[1:3] if self._data_format == "channels_last" else shape[2:4]
        _check_input_size(height, width)
        input_width = width if width is not None else 2**_COARSEST_LEVEL
        nodes = self._stem(inputs, input_width)
        levels = self._scale_permuted_network(nodes, input_width)
        endpoints = {
            str(level): self._endpoint(levels[level], level)
            for level in range(self._min_level, self._max_level + 1)
        }
        self._output_specs = {key: value.get_shape() for key, value in endpoints.items()}
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

    # -- building blocks ------------------------------------------------------------

    def _filters(self, level):
        return int(LEVEL_FILTERS[level] * self._scaling.filter_scale)

    def _channels(self, x):
        return x.shape[self._channel_axis]

    def _conv(self, x, filters, kernel_size, strides, name):
        return tf_keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=False,
            data_format=self._data_format,
            kernel_initializer=tf_utils.clone_initializer(self._kernel_initializer),
            kernel_regularizer=self._kernel_regularizer,
            name=name,
        )(x)

    def _stem(self, inputs, input_width):
        """The stem and the two level-2 blocks; returns them as the first two nodes."""
        x = self._conv(inputs, _STEM_FILTERS, 7, 2, name="stem_conv")
        x = self._norm_act(_STEM_FILTERS, name="stem_norm_act")(x)
        x = tf_keras.layers.MaxPool2D(
            3, strides=2, padding="same", data_format=self._data_format, name="stem_pool"
        )(x)
        width = math.ceil(input_width / 2**2)
        nodes = []
        for index in range(_STEM_BLOCKS):
            x = self._block_group(x, "bottleneck", self._filters(2), 0.0, name=f"stem_block{index + 1}")
            nodes.append(_Node(x, width, "bottleneck", 0))
        return nodes

    def _scale_permuted_network(self, nodes, input_width):
        """Builds every `SPINENET_BLOCK_SPECS` node; returns `{level: output node tensor}`."""
        outputs = {}
        for index, spec in enumerate(SPINENET_BLOCK_SPECS):
            name = f"block{index + 1}"
            width = math.ceil(input_width / 2**spec.level)
            filters = self._filters(spec.level)
            channels = _block_channels(spec.block, filters)
            parents = []
            for number, parent_index in enumerate(spec.parents):
                parent = nodes[parent_index]
                parents.append(self._resample(parent, width, channels, name=f"{name}_parent{number + 1}"))
                nodes[parent_index] = parent._replace(readers=parent.readers + 1)
            if spec.is_output:
                # Blocks nobody reads yet join an output node of their width and channels.
                for other_index, node in enumerate(nodes):
                    if node.readers == 0 and node.width == width and self._channels(node.tensor) == channels:
                        parents.append(node.tensor)
                        nodes[other_index] = node._replace(readers=1)
            x = tf_keras.layers.Add(name=f"{name}_sum")(parents)
            x = tf_keras.layers.Activation(self._activation, name=f"{name}_sum_act")(x)
            drop_rate = self._stochastic_depth_drop_rate * (index + 1) / len(SPINENET_BLOCK_SPECS)
            x = self._block_group(x, spec.block, filters, drop_rate, name=name)
            nodes.append(_Node(x, width, spec.block, 0))
            if spec.is_output:
                if spec.level in outputs:
                    raise ValueError(f"two output blocks at level {spec.level} in SPINENET_BLOCK_SPECS")
                outputs[spec.level] = x
        return outputs

    def _resample(self, node, target_width, target_channels, name):
        """A parent resampled to the node's width and channels (last norm without activation)."""
        parent_filters = self._channels(node.tensor)
        if node.block == "bottleneck":
            parent_filters /= _BOTTLENECK_EXPANSION
        filters = int(parent_filters * self._scaling.resample_alpha)
        x = self._conv(node.tensor, filters, 1, 1, name=f"{name}_conv_in")
        x = self._norm_act(filters, name=f"{name}_norm_act_in")(x)
        width = node.width
        if width > target_width:
            x = self._conv(x, filters, 3, 2, name=f"{name}_conv_down")
            x = self._norm_act(filters, name=f"{name}_norm_act_down")(x)
            width = math.ceil(width / 2)
            halvings = 0
            while width > target_width:
                halvings += 1
                x = tf_keras.layers.MaxPool2D(
                    3, strides=2, padding="same", data_format=self._data_format, name=f"{name}_pool{halvings}"
                )(x)
                width = math.ceil(width / 2)
        elif width < target_width:
            x = tf_keras.layers.UpSampling2D(
                target_width // width, data_format=self._data_format, interpolation="nearest",
                name=f"{name}_upsample",
            )(x)
        x = self._conv(x, target_channels, 1, 1, name=f"{name}_conv_out")
        return self._norm_act(target_channels, nonlinearity=False, name=f"{name}_norm_out")(x)

    def _block_group(self, x, block, filters, drop_rate, name):
        """`block_repeats` blocks; the first projects its shortcut if its channels change."""
        block_fn = self._bottleneck_block if block == "bottleneck" else self._residual_block
        use_projection = self._channels(x) != _block_channels(block, filters)
        for repeat in range(self._scaling.block_repeats):
            x = block_fn(x, filters, use_projection and repeat == 0, drop_rate, name=f"{name}_{repeat + 1}")
        return x

    def _residual_add(self, branch, shortcut, drop_rate, filters, name):
        branch = self._norm_act(
            filters, nonlinearity=False, zero_init=self._zero_init_residual, name=f"{name}_norm_last"
        )(branch)
        if drop_rate > 0:
            branch = nn_layers.StochasticDepth(drop_rate, name=f"{name}_drop")(branch)
        x = tf_keras.layers.Add(name=f"{name}_add")([branch, shortcut])
        return tf_keras.layers.Activation(self._activation, name=f"{name}_out")(x)

    def _shortcut(self, x, out_filters, use_projection, name):
        if not use_projection:
            return x
        shortcut = self._conv(x, out_filters, 1, 1, name=f"{name}_shortcut_conv")
        return self._norm_act(out_filters, nonlinearity=False, name=f"{name}_shortcut_norm")(shortcut)

    def _residual_block(self, x, filters, use_projection, drop_rate, name):
        shortcut = self._shortcut(x, filters, use_projection, name)
        y = self._conv(x, filters, 3, 1, name=f"{name}_conv1")
        y = self._norm_act(filters, name=f"{name}_norm_act1")(y)
        y = self._conv(y, filters, 3, 1, name=f"{name}_conv2")
        return self._residual_add(y, shortcut, drop_rate, filters, name)

    def _bottleneck_block(self, x, filters, use_projection, drop_rate, name):
        out_filters = filters * _BOTTLENECK_EXPANSION
        shortcut = self._shortcut(x, out_filters, use_projection, name)
        y = self._conv(x, filters, 1, 1, name=f"{name}_conv1")
        y = self._norm_act(filters, name=f"{name}_norm_act1")(y)
        y = self._conv(y, filters, 3, 1, name=f"{name}_conv2")
        y = self._norm_act(filters, name=f"{name}_norm_act2")(y)
        y = self._conv(y, out_filters, 1, 1, name=f"{name}_conv3")
        return self._residual_add(y, shortcut, drop_rate, out_filters, name)

    def _endpoint(self, x, level):
        filters = self._scaling.endpoint_filters
        x = self._conv(x, filters, 1, 1, name=f"endpoint{level}_conv")
        return self._norm_act(filters, name=f"endpoint{level}_norm_act")(x)

    # -- Model Garden backbone interface -----------------------------------------

    @property
    def output_specs(self):
        """A dict `{level: TensorShape}` of the outputs."""
        return self._output_specs

    @property
    def norm_act_factory(self):
        return self._norm_act

    def get_config(self):
        return {
            "model_id": self._model_id,
            # The input shape (with batch dimension), so from_config rebuilds the same model.
            "input_specs": list(self._input_specs.shape),
            "min_level": self._min_level,
            "max_level": self._max_level,
            "norm_act": self._norm_act.name,
            "norm_act_options": dict(self._norm_act.options),
            "stochastic_depth_drop_rate": self._stochastic_depth_drop_rate,
            "zero_init_residual": self._zero_init_residual,
            "activation": self._activation,
            "kernel_initializer": self._kernel_initializer,
            "kernel_regularizer": self._kernel_regularizer,
            "data_format": self._data_format,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def build_spinenet(model_id="49", norm_act="evonorm_b0", input_shape=None, input_specs=None, **kwargs):
    """A `NormActSpineNet` backbone.

        backbone = build_spinenet("49S", "evonorm_s0", input_shape=(128, 128, 3))

    Args:
      model_id: a key of `SPINENET_SCALING`.
      norm_act: a norm-act name or a `NormActFactory`.
      input_shape: the shape of one example, e.g. `(640, 640, 3)`; or give
        `input_specs` (a `tf_keras.layers.InputSpec` with a batch dimension).
      **kwargs: as `NormActSpineNet`.
    """
    return classifier.backbone_or_classifier(NormActSpineNet, model_id, input_shape, input_specs, norm_act=norm_act,
                                             **kwargs)


# Model Garden's builder of `backbone.type: evonorm_spinenet`; the config fields are the class's arguments.
build_spinenet_backbone = registration.register_backbone("evonorm_spinenet", NormActSpineNet)
