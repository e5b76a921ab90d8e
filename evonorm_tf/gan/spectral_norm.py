"""Spectral normalisation (Miyato et al. 2018, arXiv:1802.05957) for tf_keras layers.

`SpectralNormalization(layer)` makes `layer` (a Dense, Conv2D or Embedding)
compute with `W / σ(W)`, σ the largest singular value of the kernel reshaped
to `[-1, out]`, estimated by power iteration with persistent vectors u, v.
As in the paper and BigGAN-PyTorch, σ is part of the forward graph:
gradients flow through `W / σ(W)` (u and v held constant), the stored kernel
stays unnormalised, and each *training* call runs `power_iterations` steps and
stores the refined u; every call derives v = normalize(u·Wᵀ) from it.

tf_keras 2.20 has `tf_keras.layers.SpectralNormalization`, but it builds a
Keras 3 `InputSpec` (it reads `tf.keras`) and fails when called under TF 2.20;
it also rewrites the kernel in place, so no gradient reaches σ. u here is
replica-local, mean-aggregated on read (like BatchNorm's moving statistics),
so the wrapper runs under `tf.distribute` strategies.
"""

import tensorflow as tf
import tf_keras

from evonorm_tf.norm_act_core import training_flag

__all__ = ["SpectralNormalization", "spectral_norm"]

_SUPPORTED = (tf_keras.layers.Dense, tf_keras.layers.Conv2D, tf_keras.layers.Embedding)


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class SpectralNormalization(tf_keras.layers.Wrapper):
    """Spectrally normalises a `Dense`, `Conv2D` or `Embedding` layer.

    Args:
      layer: the tf_keras layer to normalise.
      power_iterations: power-iteration steps per training call. Default 1.
      epsilon: added to norms in the power iteration. Default 1e-12.

    Call arguments: `inputs` as the wrapped layer; `training`: run the power
    iteration and update u, v.
    """

    def __init__(self, layer, power_iterations=1, epsilon=1e-12, **kwargs):
        if not isinstance(layer, _SUPPORTED):
            raise ValueError(f"SpectralNormalization supports Dense, Conv2D and Embedding, "
                             f"received {type(layer).__name__}")
        if isinstance(layer, tf_keras.layers.Conv2D) and (
                layer.data_format != "channels_last" or layer.groups != 1):
            raise ValueError(f"SpectralNormalization supports channels_last, groups=1 Conv2D, "
                             f"received data_format={layer.data_format!r}, groups={layer.groups}")
        if not isinstance(power_iterations, int) or power_iterations < 1:
            raise ValueError(f"power_iterations must be a positive int, received {power_iterations!r}")
        super().__init__(layer, **kwargs)
        self.power_iterations = power_iterations
        self.epsilon = epsilon

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.kernel = (self.layer.embeddings if isinstance(self.layer, tf_keras.layers.Embedding)
                       else self.layer.kernel)
        local = {"trainable": False, "dtype": tf.float32,
                 "synchronization": tf.VariableSynchronization.ON_READ,
                 "aggregation": tf.VariableAggregation.MEAN}
        self.u = self.add_weight(name="u", shape=(1, self.kernel.shape[-1]),
                                 initializer=tf_keras.initializers.RandomNormal(stddev=1.0), **local)
        super().build(input_shape)

    def _sigma(self, matrix, training):
        u = tf.convert_to_tensor(self.u)
        v = tf.math.l2_normalize(tf.matmul(u, matrix, transpose_b=True), epsilon=self.epsilon)
        if training:
            for _ in range(self.power_iterations):
                u = tf.math.l2_normalize(tf.matmul(v, matrix), epsilon=self.epsilon)
                v = tf.math.l2_normalize(tf.matmul(u, matrix, transpose_b=True), epsilon=self.epsilon)
            self.u.assign(u)
        u, v = tf.stop_gradient(u), tf.stop_gradient(v)
        return tf.reshape(tf.matmul(tf.matmul(v, matrix), u, transpose_b=True), [])

    def normalized_kernel(self, training=False):
        """`W / σ(W)` with the current (training: refined) singular vectors."""
        kernel = tf.cast(self.kernel, tf.float32)
        matrix = tf.reshape(kernel, [-1, kernel.shape[-1]])
        training = training_flag(training)
        if isinstance(training, bool):
            sigma = self._sigma(matrix, training)
        else:
            sigma = tf.cond(training, lambda: self._sigma(matrix, True),
                            lambda: self._sigma(matrix, False))
        return kernel / tf.maximum(sigma, self.epsilon)

    def call(self, inputs, training=None):
        kernel = self.normalized_kernel(training)
        layer = self.layer
        if isinstance(layer, tf_keras.layers.Embedding):
            return tf.nn.embedding_lookup(kernel, tf.cast(inputs, tf.int32))
        inputs = tf.cast(inputs, tf.float32)
        if isinstance(layer, tf_keras.layers.Dense):
            outputs = tf.tensordot(inputs, kernel, [[inputs.shape.rank - 1], [0]])
        else:
            outputs = tf.nn.conv2d(inputs, kernel, strides=layer.strides,
                                   padding=layer.padding.upper(), dilations=layer.dilation_rate)
        if layer.use_bias:
            outputs = outputs + layer.bias
        return layer.activation(outputs) if layer.activation is not None else outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "power_iterations": self.power_iterations,
                "epsilon": self.epsilon}


def spectral_norm(layer, enabled=True):
    """`SpectralNormalization(layer)` when `enabled`, else `layer` unchanged."""
    return SpectralNormalization(layer) if enabled else layer
