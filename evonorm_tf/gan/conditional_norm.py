"""Class-conditional norm-act layers for BigGAN generators (tf_keras).

BigGAN's generator replaces each BatchNorm's learned γ, β by per-sample values
predicted from a condition vector c = [z chunk, shared class embedding]
(Brock, Donahue, Simonyan 2019, arXiv:1809.11096). `ConditionalNormAct` does
the same for any `get_norm_act` name: it is that layer's own formula with γ
and β replaced by

    γ(c) = 1 + c·W_γ        β(c) = c·W_β

(linear maps without bias as in compare_gan and BigGAN-PyTorch, optionally
spectrally normalised; `projection_bias=True` adds learned offsets; the `1 +`
follows BigGAN-PyTorch's `ccbn`, compare_gan predicts γ without it). W_γ and
W_β are drawn by two fresh instances of the configured initializer, so they
start different. Per family:

| family | output |
|---|---|
| bn_relu / bn_silu | `act(BN(x) · γ(c) + β(c))`, BN without its own affine |
| gn_relu / gn_silu | `act(GN(x) · γ(c) + β(c))` |
| frn_tlu | `max(x / sqrt(mu2_hw + ε) · γ(c) + β(c), τ)`, τ learned per channel |
| evonorm_* | `EvoNorm(x; γ=1, β=0) · γ(c) + β(c)` |

For the EvoNorms the nonlinearity sits inside the formula (B0's max, S0's
sigmoid) and γ, β act after it, so "normalise with unit affine, then apply the
conditional affine" is exactly the formula with per-sample γ, β. How the
EvoNorm paper conditioned its BigGAN is not published; this reading matches a
public TF fork that applies EvoNorm-S0 then the class-conditional γ, β
(*unconfirmed*, see docs/biggan.md). The inner layer keeps its own other
weights (v, moving statistics); its γ, β are constants 1 and 0
(non-trainable weights). Only `channels_last` inputs are supported.
"""

import tensorflow as tf
import tf_keras

from evonorm_tf import tf_keras as evonorm
from evonorm_tf.gan.initializers import fresh_initializer
from evonorm_tf.gan.spectral_norm import spectral_norm

__all__ = ["ConditionalNormAct", "POST_ACTIVATION_FAMILIES"]

# Families whose activation follows the affine map: the inner layer runs
# without its nonlinearity and this layer applies the activation.
POST_ACTIVATION_FAMILIES = {
    "bn_relu": "relu", "bn_silu": "silu", "gn_relu": "relu", "gn_silu": "silu", "frn_tlu": "tlu",
}
_BATCH_NORMS = ("bn_relu", "bn_silu")


class _UnitAffine:
    """Makes a norm-act layer's γ, β the constants 1 and 0 (non-trainable)."""

    def _add_channel_weight(self, name, channels, initializer, regularizer=None,
                            constraint=None, trainable=True):
        if name in ("gamma", "beta"):
            constant = "ones" if name == "gamma" else "zeros"
            return super()._add_channel_weight(name, channels, constant, trainable=False)
        return super()._add_channel_weight(name, channels, initializer, regularizer,
                                           constraint, trainable)


_UNIT_CLASSES = {}


def _unit_affine_layer(name, kwargs):
    klass = evonorm.TF_KERAS_TABLE[name]
    if name in _BATCH_NORMS:
        return klass(nonlinearity=False, center=False, scale=False, **kwargs)
    if klass not in _UNIT_CLASSES:
        _UNIT_CLASSES[klass] = type("UnitAffine" + klass.__name__, (_UnitAffine, klass), {})
    nonlinearity = name not in POST_ACTIVATION_FAMILIES
    return _UNIT_CLASSES[klass](nonlinearity=nonlinearity, **kwargs)


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class ConditionalNormAct(tf_keras.layers.Layer):
    """A norm-act layer whose γ, β are predicted from a condition vector.

    Args:
      norm_act: a `get_norm_act` name (see the module docstring for the exact
        formula per family). Default `"bn_relu"` (BigGAN's choice).
      spectral_norm: spectrally normalise the γ and β projections. Default True.
      projection_initializer: kernel initializer of the projections. Default
        `"orthogonal"` (BigGAN). Each projection gets its own instance
        (`initializers.fresh_initializer`): an unseeded instance draws
        independently; a seeded one gives W_γ its seed and W_β seed + 1.
      projection_bias: learned biases on the projections (start at zero).
        Default False (compare_gan, BigGAN-PyTorch).
      **norm_act_kwargs: passed to the inner norm-act layer (`epsilon`,
        `groups`, `momentum`, ...); `gamma_*`/`beta_*` and `data_format` are
        not accepted.

    Call arguments:
      inputs: `[N, H, W, C]` activations.
      condition: `[N, D]` condition vectors.
      training: passed to the inner layer (batch statistics for B-series and BN).
    """

    def __init__(self, norm_act="bn_relu", spectral_norm=True,
                 projection_initializer="orthogonal", projection_bias=False, **norm_act_kwargs):
        layer_kwargs = {key: norm_act_kwargs.pop(key)
                        for key in ("name", "dtype", "trainable") if key in norm_act_kwargs}
        super().__init__(**layer_kwargs)
        if not isinstance(norm_act, str):
            raise TypeError(f"norm_act must be a norm-act name, received {norm_act!r}")
        key = norm_act.strip().lower()
        if key not in evonorm.TF_KERAS_TABLE:
            raise ValueError(f"unknown norm-act name {norm_act!r}; valid names: "
                             f"{', '.join(sorted(evonorm.TF_KERAS_TABLE))}")
        forbidden = sorted(k for k in norm_act_kwargs
                           if k.startswith(("gamma_", "beta_")) or k in ("data_format", "nonlinearity"))
        if forbidden:
            raise ValueError(f"ConditionalNormAct sets these arguments itself, received {forbidden}")
        self.norm_act = key
        self.spectral_norm = bool(spectral_norm)
        self.projection_bias = bool(projection_bias)
        self.projection_initializer = tf_keras.initializers.get(projection_initializer)
        self.norm_act_kwargs = dict(norm_act_kwargs)
        self.inner = _unit_affine_layer(key, self.norm_act_kwargs)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 4 or input_shape[-1] is None:
            raise ValueError(f"ConditionalNormAct expects [N, H, W, C] inputs with known C, "
                             f"received shape {input_shape}")
        channels = int(input_shape[-1])

        def projection(name, index):
            dense = tf_keras.layers.Dense(
                channels, use_bias=self.projection_bias, name=name,
                kernel_initializer=fresh_initializer(self.projection_initializer, index))
            return spectral_norm(dense, self.spectral_norm)

        self.gain_projection = projection("gain", 0)
        self.bias_projection = projection("bias", 1)
        if POST_ACTIVATION_FAMILIES.get(self.norm_act) == "tlu":
            self.tau = self.add_weight("tau", shape=(channels,), initializer="zeros",
                                       dtype=tf.float32, experimental_autocast=False)
        super().build(input_shape)

    def call(self, inputs, condition, training=None):
        normalized = tf.cast(self.inner(inputs, training=training), tf.float32)
        condition = tf.cast(condition, tf.float32)
        gain = 1.0 + tf.cast(self.gain_projection(condition, training=training), tf.float32)
        bias = tf.cast(self.bias_projection(condition, training=training), tf.float32)
        outputs = normalized * gain[:, None, None, :] + bias[:, None, None, :]
        activation = POST_ACTIVATION_FAMILIES.get(self.norm_act)
        if activation == "relu":
            outputs = tf.nn.relu(outputs)
        elif activation == "silu":
            outputs = tf.nn.silu(outputs)
        elif activation == "tlu":
            outputs = tf.maximum(outputs, self.tau)
        return tf.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "norm_act": self.norm_act,
            "spectral_norm": self.spectral_norm,
            "projection_bias": self.projection_bias,
            "projection_initializer": tf_keras.initializers.serialize(self.projection_initializer),
            **self.norm_act_kwargs,
        }
