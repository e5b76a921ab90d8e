"""A multi-path block: the sum of m active candidate convolutions, normalized by Shadow BN.

    block = MultiPathBlock(filters=32, kernel_sizes=(1, 3, 5))
    y = block(x, active_paths_mask=[1., 0., 1.], training=True)   # m = 2
    y = block(x, training=True)    # one-shot supernet training: a random subset
    y = block(x)                   # inference without a mask: all k paths

Every candidate path is a bias-free convolution; inactive ones are multiplied
by zero (all k are computed, so the shapes are static and one XLA program
serves every mask). The summed output goes through Shadow BN number
m = sum(mask), then an optional activation. Without a mask, training samples
m uniformly in 1..k and then m distinct paths uniformly (MixPath's supernet
training), and inference uses all k paths.

Reference: Chu, Zhou, Zhang, Li. MixPath. arXiv:2001.05887.
"""

import tensorflow as tf
import tf_keras

from official.modeling import tf_utils

from evonorm_tf import arguments
from evonorm_tf.norm_act_core import training_flag
from evonorm_tf.tf_keras.shadow_batch_norm import ShadowBatchNormalization

__all__ = ["MultiPathBlock", "build_shadow_bn_convnet"]


def _check_kernel_sizes(kernel_sizes):
    if not isinstance(kernel_sizes, (list, tuple)) or not kernel_sizes:
        raise ValueError(f"kernel_sizes must be a non-empty list of odd integers, received {kernel_sizes!r}")
    for size in kernel_sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ValueError(f"kernel_sizes must hold odd positive integers, received {kernel_sizes!r}")
    return tuple(kernel_sizes)


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class MultiPathBlock(tf_keras.layers.Layer):
    """Sum of the active candidate convolutions, then Shadow BN number m and an activation.

    Args:
      filters: output channels of every path.
      kernel_sizes: one odd kernel size per candidate path; k = len(kernel_sizes).
      activation: applied after the Shadow BN (default "relu"; None for none).
      momentum, epsilon: of the Shadow BN.
      kernel_initializer: of the path convolutions.
      data_format: `"channels_last"` (default) or `"channels_first"`.

    Call arguments:
      inputs: a rank-4 image batch.
      active_paths_mask: `[k]` tensor of 0/1 (or bool): which paths are active;
        at least one must be. m = its sum selects the Shadow BN. Default None:
        a random subset in training, all paths in inference.
      training: passed to the Shadow BN.
    """

    def __init__(self, filters, kernel_sizes=(1, 3, 5), activation="relu", momentum=0.9,
                 epsilon=1e-5, kernel_initializer="he_normal", data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
            raise ValueError(f"filters must be a positive integer, received filters={filters!r}")
        self.filters = filters
        self.kernel_sizes = _check_kernel_sizes(kernel_sizes)
        self.num_paths = len(self.kernel_sizes)
        self.activation = tf_keras.activations.get(activation)
        self.data_format = arguments.check_data_format(data_format)
        self.kernel_initializer = tf_keras.initializers.get(kernel_initializer)
        self.paths = [
            tf_keras.layers.Conv2D(
                filters, size, padding="same", use_bias=False, data_format=self.data_format,
                kernel_initializer=tf_utils.clone_initializer(self.kernel_initializer),
                name=f"path{index}",
            )
            for index, size in enumerate(self.kernel_sizes)
        ]
        self.shadow_norm = ShadowBatchNormalization(
            self.num_paths, momentum=momentum, epsilon=epsilon, data_format=self.data_format,
            name="shadow_norm",
        )

    def sample_mask(self):
        """A random `[k]` 0/1 mask: m uniform in 1..k, then m distinct paths uniformly."""
        active = tf.random.uniform([], 1, self.num_paths + 1, dtype=tf.int32)
        ranks = tf.argsort(tf.argsort(tf.random.uniform([self.num_paths])))
        return tf.cast(ranks < active, tf.float32)

    def call(self, inputs, active_paths_mask=None, training=None):
        if active_paths_mask is None:
            all_paths = tf.ones([self.num_paths], tf.float32)
            training = training_flag(training)
            if isinstance(training, bool):
                active_paths_mask = self.sample_mask() if training else all_paths
            else:
                active_paths_mask = tf.where(training, self.sample_mask(), all_paths)
        mask = tf.cast(tf.reshape(active_paths_mask, [self.num_paths]), self.compute_dtype)
        summed = tf.add_n([mask[index] * path(inputs) for index, path in enumerate(self.paths)])
        active_paths = tf.cast(tf.round(tf.reduce_sum(tf.cast(mask, tf.float32))), tf.int32)
        outputs = self.shadow_norm(summed, active_paths, training=training)
        return self.activation(outputs)

    def get_config(self):
        config = {
            "filters": self.filters,
            "kernel_sizes": list(self.kernel_sizes),
            "activation": tf_keras.activations.serialize(self.activation),
            "momentum": self.shadow_norm.momentum,
            "epsilon": self.shadow_norm.epsilon,
            "kernel_initializer": tf_keras.initializers.serialize(self.kernel_initializer),
            "data_format": self.data_format,
        }
        return {**super().get_config(), **config}


def build_shadow_bn_convnet(input_shape, num_classes, widths=(32, 64), kernel_sizes=(1, 3, 5)):
    """A small one-shot supernet classifier: per stage two `MultiPathBlock`s.

    The first block of each stage after the first is preceded by 2×2 average
    pooling; the last feature map is flattened into a dense layer (the
    layout of the digits demo's convnet). Trained with `model(x,
    training=True)` every block samples its own paths; inference uses all.

    Args:
      input_shape: `(height, width, channels)`.
      num_classes: number of logits.
      widths: channels of each stage.
      kernel_sizes: the candidate kernel sizes of every block.
    """
    inputs = tf_keras.Input(input_shape)
    x = inputs
    for stage, width in enumerate(widths):
        if stage > 0:
            x = tf_keras.layers.AveragePooling2D(2, name=f"stage{stage + 1}_pool")(x)
        for index in range(2):
            x = MultiPathBlock(width, kernel_sizes, name=f"stage{stage + 1}_block{index + 1}")(x)
    x = tf_keras.layers.Flatten()(x)
    outputs = tf_keras.layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, outputs, name="shadow_bn_convnet")
