"""Keras 3 front-end: the norm-act layers as `keras.layers.Layer` subclasses.

One class per registered norm-act (`evonorm_tf.registry`), built from its
spec: the core mixin of `evonorm_tf.norm_act_core` on Keras 3's `Layer` (or
on Keras 3's `BatchNormalization` for the BN baselines). For Model Garden
(tf_keras) models use `evonorm_tf.tf_keras` instead: a Keras 3 layer inside a
tf_keras model is not tracked.

The layers are native on every Keras backend: on TensorFlow they run the
kernel path chosen at build (`evonorm_tf.kernels`), on JAX and PyTorch the
same formulas in `keras.ops` (`evonorm_tf.backend_formulas`), with the same
arguments, weights and saved configs (`evonorm_tf.compute_backends`).
"""

import keras

from evonorm_tf import compute_backends, norm_acts, registry

_register = keras.saving.register_keras_serializable(package="evonorm_tf")


class _Keras3Weights:
    _keras = keras
    _compute = compute_backends.for_keras_backend()

    def _add_channel_weight(self, name, channels, initializer, regularizer=None,
                            constraint=None, trainable=True):
        return self.add_weight(
            name=name,
            shape=(channels,),
            initializer=initializer,
            regularizer=regularizer,
            constraint=constraint,
            trainable=trainable,
            dtype="float32",
            autocast=False,
            aggregation="none" if trainable else "mean",
        )


class _MeanMovingStatistics:
    """Averages BatchNormalization's moving statistics over replicas.

    Keras 3 creates them with `aggregation="none"`: under a `tf.distribute`
    strategy with per-replica statistics (`synchronized=False`) each replica's
    copy then drifts apart and a read returns one replica's value. With
    `"mean"` every update is averaged, as for the EvoNorms' `moving_variance`.
    """

    _keras = keras
    _compute = compute_backends.for_keras_backend()

    def add_weight(self, *args, trainable=True, aggregation="none", **kwargs):
        if not trainable and aggregation == "none":
            aggregation = "mean"
        return super().add_weight(*args, trainable=trainable, aggregation=aggregation, **kwargs)


class _BatchMomentsAtAnyScale:
    """BatchNormalization's batch moments on JAX and PyTorch: two passes, the variance saturated.

    Keras's PyTorch backend takes the variance as `E[x²] − E[x]²`, which is
    `inf − inf = NaN` for inputs of scale 1e30, and neither backend supports
    `synchronized=True` (one JAX program sees the global batch anyway). Here
    the variance is the mean squared deviation from the mean, and one beyond
    float32 is the largest float32 (`backend_formulas.batch_norm_moments`), so
    outputs, gradients and `moving_variance` stay finite (docs/robustness.md).
    """

    def _moments(self, inputs, mask):
        if mask is not None:
            return super()._moments(inputs, mask)
        return self._compute.batch_norm_moments(inputs, self._reduction_axes)


def make_layer_class(spec):
    """The Keras 3 layer class of a `registry.NormActSpec`."""
    if spec.keras_base == "BatchNormalization":
        bases = (_MeanMovingStatistics, spec.core, keras.layers.BatchNormalization)
        if _MeanMovingStatistics._compute is compute_backends.KERAS_OPS:
            bases = (_BatchMomentsAtAnyScale,) + bases
    else:
        bases = (_Keras3Weights, spec.core, keras.layers.Layer)
    namespace = {
        "__doc__": spec.core.__doc__,
        "__module__": __name__,
        "__qualname__": spec.class_name,
        "activation": spec.post_activation,
    }
    return _register(type(spec.class_name, bases, namespace))


registry.register_front_end("keras", make_layer_class)

__all__ = [spec.class_name for spec in norm_acts.BUILT_IN]
globals().update({spec.class_name: registry.layer_class(spec.name, "keras") for spec in norm_acts.BUILT_IN})
