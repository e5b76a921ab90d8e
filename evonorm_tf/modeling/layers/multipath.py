"""A multi-path block: the sum of m ≤ M of its n candidate paths, normalized by Shadow BN.

    block = MultiPathBlock(filters=32, kernel_sizes=(3, 5, 7, 9), max_active=2)
    y = block(x, active_paths_mask=[1., 0., 1., 0.], training=True)   # m = 2
    y = block(x, training=True)    # one-shot supernet training: a random subset
    y = block(x)                   # inference without a mask: the first M paths

Two path forms:

- `"conv"` (default): every candidate path is a bias-free k×k convolution.
- `"mixpath"`, the inverted bottleneck of MixPath's search space: a shared
  1×1 expansion convolution (Conv-BN-ReLU6), then per path a k×k depthwise
  Conv-BN-ReLU6; the active paths are summed, projected by a linear 1×1
  convolution, and Shadow BN follows that pointwise convolution. A residual
  connection is added when the stride is 1 and the width is unchanged.

Inactive paths are multiplied by zero (all n are computed, so the shapes are
static and one XLA program serves every mask); their per-path BatchNorms
still see the shared expansion's output and update their moving statistics.
The summed output goes through Shadow BN number m = sum(mask) (or through one
BN shared by every m, `shadow_bn=False`, the baseline MixPath compares
against), then an optional activation.

Sampling (MixPath's supernet training): m uniform in 1..M, then m distinct
paths uniformly out of n, independently for every block and step.

Reference: Chu, Zhou, Zhang, Li. MixPath. arXiv:2001.05887.
"""

import numbers

import tensorflow as tf
import tf_keras

from evonorm_tf import arguments
from evonorm_tf.norm_act_core import training_flag
from evonorm_tf.shadow_batch_norm import path_index
from evonorm_tf.tf_keras.shadow_batch_norm import ShadowBatchNormalization

__all__ = ["MultiPathBlock", "PATH_FORMS", "build_shadow_bn_convnet", "sample_path_mask"]

PATH_FORMS = ("conv", "mixpath")


def _check_kernel_sizes(kernel_sizes):
    if not isinstance(kernel_sizes, (list, tuple)) or not kernel_sizes:
        raise ValueError(f"kernel_sizes must be a non-empty list of odd integers, received {kernel_sizes!r}")
    for size in kernel_sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ValueError(f"kernel_sizes must hold odd positive integers, received {kernel_sizes!r}")
    return tuple(kernel_sizes)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, received {name}={value!r}")
    return int(value)


def check_max_active(max_active, num_paths):
    """M, the most paths active at once: an integer in 1..n (None: n)."""
    if max_active is None:
        return num_paths
    if isinstance(max_active, bool) or not isinstance(max_active, numbers.Integral) \
            or not 1 <= max_active <= num_paths:
        raise ValueError(
            f"max_active must be an integer in [1, {num_paths}] (the number of paths), "
            f"received max_active={max_active!r}"
        )
    return int(max_active)


def sample_path_mask(num_paths, max_active=None, seed=None):
    """A random `[n]` float32 0/1 mask: m uniform in 1..M, then m of n distinct paths uniformly.

    Every subset of size m ≤ M has probability 1 / (M · C(n, m)).

    Args:
      num_paths: n, the number of candidate paths.
      max_active: M ≤ n, the most active paths (MixPath: 2 of 4). Default n.
      seed: None (stateful random ops, seeded by the global seed) or a
        shape-`[2]` integer seed for stateless, reproducible draws.
    """
    num_paths = _check_positive_int("num_paths", num_paths)
    max_active = check_max_active(max_active, num_paths)
    if seed is None:
        active = tf.random.uniform([], 1, max_active + 1, dtype=tf.int32)
        scores = tf.random.uniform([num_paths])
    else:
        count_seed, order_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        active = tf.random.stateless_uniform([], count_seed, 1, max_active + 1, dtype=tf.int32)
        scores = tf.random.stateless_uniform([num_paths], order_seed)
    # The ranks of i.i.d. uniforms are a uniform random permutation.
    ranks = tf.argsort(tf.argsort(scores))
    return tf.cast(ranks < active, tf.float32)


class MultiPathBlockCore:
    """Sum of the m active candidate paths (m ≤ M of n), Shadow BN number m, an activation.

    Args:
      filters: output channels.
      kernel_sizes: one odd kernel size per candidate path; n = len(kernel_sizes).
      max_active: M, the most paths active at once (MixPath: 2 of 4); the
        Shadow BN holds M BatchNorms. Default None: n.
      path_form: `"conv"` (bare k×k convolutions, default) or `"mixpath"`
        (expansion Conv-BN-ReLU6, per-path depthwise Conv-BN-ReLU6, linear
        1×1 projection, Shadow BN after it; see the module docstring).
      expansion: width multiplier of the `"mixpath"` expansion. Default 3.
      strides: of the path convolutions. Default 1.
      shadow_bn: True (default) for one BN per m; False for one BN shared by
        every m (the baseline).
      activation: applied last (default "relu"; None for none — MixPath's
        inverted bottleneck ends linearly).
      momentum, epsilon: of every BatchNorm in the block.
      kernel_initializer: of the convolutions.
      data_format: `"channels_last"` (default) or `"channels_first"`.

    Call arguments:
      inputs: a rank-4 image batch.
      active_paths_mask: `[n]` tensor of 0/1 (or bool): which paths are
        active; 1 ≤ m = sum ≤ M. Default None: a random mask
        (`sample_path_mask`) in training, the first M paths in inference.
      training: passed to the BatchNorms.

    Reference: Chu, Zhou, Zhang, Li. MixPath. arXiv:2001.05887.
    """

    _keras = None
    _shadow_norm_class = None

    def __init__(self, filters, kernel_sizes=(1, 3, 5), max_active=None, path_form="conv", expansion=3,
                 strides=1, shadow_bn=True, activation="relu", momentum=0.9, epsilon=1e-5,
                 kernel_initializer="he_normal", data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.filters = _check_positive_int("filters", filters)
        self.kernel_sizes = _check_kernel_sizes(kernel_sizes)
        self.num_paths = len(self.kernel_sizes)
        self.max_active = check_max_active(max_active, self.num_paths)
        if path_form not in PATH_FORMS:
            raise ValueError(f"path_form must be one of {PATH_FORMS}, received path_form={path_form!r}")
        self.path_form = path_form
        self.expansion = _check_positive_int("expansion", expansion)
        self.strides = _check_positive_int("strides", strides)
        if not isinstance(shadow_bn, bool):
            raise TypeError(f"shadow_bn must be a bool, received shadow_bn={shadow_bn!r}")
        self.shadow_bn = shadow_bn
        self.activation = self._keras.activations.get(activation)
        self.momentum = arguments.check_momentum(momentum)
        self.epsilon = arguments.check_epsilon(epsilon)
        self.kernel_initializer = self._keras.initializers.get(kernel_initializer)
        self.data_format = arguments.check_data_format(data_format)
        self.shadow_norm = self._shadow_norm_class(
            self.max_active if shadow_bn else 1, momentum=momentum, epsilon=epsilon,
            data_format=self.data_format, name="shadow_norm",
        )

    # -- sublayers ------------------------------------------------------------------

    def _initializer(self):
        serialized = self._keras.initializers.serialize(self.kernel_initializer)
        return self._keras.initializers.deserialize(serialized)

    def _batch_norm(self, name):
        return self._keras.layers.BatchNormalization(
            axis=-1 if self.data_format == "channels_last" else 1, momentum=self.momentum,
            epsilon=self.epsilon, name=name,
        )

    def _build_sublayer(self, layer, input_shape):
        layer.build(input_shape)
        return layer, tuple(layer.compute_output_shape(input_shape))

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        channels = arguments.check_input_shape(input_shape, self.data_format)
        layers = self._keras.layers
        self.paths, self.path_norms = [], []
        if self.path_form == "conv":
            for index, size in enumerate(self.kernel_sizes):
                conv, output_shape = self._build_sublayer(layers.Conv2D(
                    self.filters, size, strides=self.strides, padding="same", use_bias=False,
                    data_format=self.data_format, kernel_initializer=self._initializer(), name=f"path{index}",
                ), input_shape)
                self.paths.append(conv)
        else:
            self.expand, hidden_shape = self._build_sublayer(layers.Conv2D(
                channels * self.expansion, 1, use_bias=False, data_format=self.data_format,
                kernel_initializer=self._initializer(), name="expand",
            ), input_shape)
            self.expand_norm, _ = self._build_sublayer(self._batch_norm("expand_norm"), hidden_shape)
            for index, size in enumerate(self.kernel_sizes):
                conv, path_shape = self._build_sublayer(layers.DepthwiseConv2D(
                    size, strides=self.strides, padding="same", use_bias=False, data_format=self.data_format,
                    depthwise_initializer=self._initializer(), name=f"path{index}",
                ), hidden_shape)
                self.paths.append(conv)
                self.path_norms.append(self._build_sublayer(self._batch_norm(f"path{index}_norm"), path_shape)[0])
            self.project, output_shape = self._build_sublayer(layers.Conv2D(
                self.filters, 1, use_bias=False, data_format=self.data_format,
                kernel_initializer=self._initializer(), name="project",
            ), path_shape)
        self.shadow_norm.build(output_shape)
        self.use_residual = self.path_form == "mixpath" and self.strides == 1 and channels == self.filters
        super().build(input_shape)

    # -- forward --------------------------------------------------------------------

    def _path_outputs(self, inputs, training):
        if self.path_form == "conv":
            return [path(inputs) for path in self.paths]
        hidden = tf.nn.relu6(self.expand_norm(self.expand(inputs), training=training))
        return [tf.nn.relu6(norm(path(hidden), training=training))
                for path, norm in zip(self.paths, self.path_norms)]

    def path_features(self, inputs, training=False):
        """Each path's contribution to the sum that Shadow BN normalizes, a list of n tensors.

        The `"mixpath"` projection is linear, so the block's pre-normalization
        sum is the masked sum of these.
        """
        outputs = self._path_outputs(inputs, training)
        if self.path_form == "mixpath":
            outputs = [self.project(output) for output in outputs]
        return outputs

    def default_mask(self, training):
        """The mask used when none is given: sampled in training, the first M paths in inference."""
        first = tf.cast(tf.range(self.num_paths) < self.max_active, tf.float32)
        training = training_flag(training)
        if isinstance(training, bool):
            return sample_path_mask(self.num_paths, self.max_active) if training else first
        return tf.where(training, sample_path_mask(self.num_paths, self.max_active), first)

    def call(self, inputs, active_paths_mask=None, training=None):
        if active_paths_mask is None:
            active_paths_mask = self.default_mask(training)
        mask = tf.cast(tf.reshape(active_paths_mask, [self.num_paths]), tf.float32)
        outputs = self._path_outputs(inputs, training)
        summed = tf.add_n([tf.cast(mask[index], output.dtype) * output for index, output in enumerate(outputs)])
        if self.path_form == "mixpath":
            summed = self.project(summed)
        active = tf.cast(tf.round(tf.reduce_sum(mask)), tf.int32)
        # Validates 1 <= m <= M (statically, or by an assertion).
        row = path_index(active, self.max_active)
        normalized = self.shadow_norm(summed, active_paths=(row + 1) if self.shadow_bn else 1,
                                      training=training)
        if self.use_residual:
            normalized = normalized + tf.cast(inputs, normalized.dtype)
        return self.activation(normalized)

    def compute_output_shape(self, input_shape):
        height_axis = 1 if self.data_format == "channels_last" else 2
        shape = list(input_shape)
        for axis in (height_axis, height_axis + 1):
            shape[axis] = None if shape[axis] is None else -(-shape[axis] // self.strides)
        shape[-1 if self.data_format == "channels_last" else 1] = self.filters
        return tuple(shape)

    def get_config(self):
        config = {
            "filters": self.filters,
            "kernel_sizes": list(self.kernel_sizes),
            "max_active": self.max_active,
            "path_form": self.path_form,
            "expansion": self.expansion,
            "strides": self.strides,
            "shadow_bn": self.shadow_bn,
            "activation": self._keras.activations.serialize(self.activation),
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "kernel_initializer": self._keras.initializers.serialize(self.kernel_initializer),
            "data_format": self.data_format,
        }
        return {**super().get_config(), **config}


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class MultiPathBlock(MultiPathBlockCore, tf_keras.layers.Layer):
    __doc__ = MultiPathBlockCore.__doc__
    _keras = tf_keras
    _shadow_norm_class = ShadowBatchNormalization


def build_shadow_bn_convnet(input_shape, num_classes, widths=(32, 64), kernel_sizes=(1, 3, 5), **block_options):
    """A small one-shot supernet classifier: per stage two `MultiPathBlock`s.

    The first block of each stage after the first is preceded by 2×2 average
    pooling; the last feature map is flattened into a dense layer (the
    layout of the digits demo's convnet). Trained with `model(x,
    training=True)` every block samples its own paths; inference uses the
    first M of every block.

    Args:
      input_shape: `(height, width, channels)`.
      num_classes: number of logits.
      widths: channels of each stage.
      kernel_sizes: the candidate kernel sizes of every block.
      **block_options: passed to every `MultiPathBlock` (`max_active`,
        `path_form`, `shadow_bn`, ...).
    """
    inputs = tf_keras.Input(input_shape)
    x = inputs
    for stage, width in enumerate(widths):
        if stage > 0:
            x = tf_keras.layers.AveragePooling2D(2, name=f"stage{stage + 1}_pool")(x)
        for index in range(2):
            x = MultiPathBlock(width, kernel_sizes, name=f"stage{stage + 1}_block{index + 1}", **block_options)(x)
    x = tf_keras.layers.Flatten()(x)
    outputs = tf_keras.layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, outputs, name="shadow_bn_convnet")
