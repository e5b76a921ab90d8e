"""Keras 3 front-end: the norm-act layers as `keras.layers.Layer` subclasses.

The math lives in `evonorm_tf.formulas` and the shared logic in
`evonorm_tf.norm_act_core`; this module only binds them to Keras 3. For
Model Garden (tf_keras) models use `evonorm_tf.tf_keras` instead: a Keras 3
layer inside a tf_keras model is not tracked.
"""

import keras

from evonorm_tf import norm_act_core as core

__all__ = [
    "BatchNormReLU",
    "BatchNormSiLU",
    "EvoNormB0",
    "EvoNormB1",
    "EvoNormB2",
    "EvoNormS0",
    "EvoNormS1",
    "EvoNormS2",
    "FilterResponseNormTLU",
    "GroupNormReLU",
    "GroupNormSiLU",
]

_register = keras.saving.register_keras_serializable(package="evonorm_tf")


class _Keras3Weights:
    _keras = keras

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

    def add_weight(self, *args, trainable=True, aggregation="none", **kwargs):
        if not trainable and aggregation == "none":
            aggregation = "mean"
        return super().add_weight(*args, trainable=trainable, aggregation=aggregation, **kwargs)


@_register
class EvoNormB0(_Keras3Weights, core.EvoNormB0Core, keras.layers.Layer):
    __doc__ = core.EvoNormB0Core.__doc__


@_register
class EvoNormB1(_Keras3Weights, core.EvoNormB1Core, keras.layers.Layer):
    __doc__ = core.EvoNormB1Core.__doc__


@_register
class EvoNormB2(_Keras3Weights, core.EvoNormB2Core, keras.layers.Layer):
    __doc__ = core.EvoNormB2Core.__doc__


@_register
class EvoNormS0(_Keras3Weights, core.EvoNormS0Core, keras.layers.Layer):
    __doc__ = core.EvoNormS0Core.__doc__


@_register
class EvoNormS1(_Keras3Weights, core.EvoNormS1Core, keras.layers.Layer):
    __doc__ = core.EvoNormS1Core.__doc__


@_register
class EvoNormS2(_Keras3Weights, core.EvoNormS2Core, keras.layers.Layer):
    __doc__ = core.EvoNormS2Core.__doc__


@_register
class FilterResponseNormTLU(_Keras3Weights, core.FilterResponseNormTLUCore, keras.layers.Layer):
    __doc__ = core.FilterResponseNormTLUCore.__doc__


@_register
class GroupNormReLU(_Keras3Weights, core.GroupNormActCore, keras.layers.Layer):
    __doc__ = core.GroupNormActCore.__doc__
    activation = "relu"


@_register
class GroupNormSiLU(_Keras3Weights, core.GroupNormActCore, keras.layers.Layer):
    __doc__ = core.GroupNormActCore.__doc__
    activation = "silu"


@_register
class BatchNormReLU(_MeanMovingStatistics, core.BatchNormActCore, keras.layers.BatchNormalization):
    __doc__ = core.BatchNormActCore.__doc__
    _keras = keras
    activation = "relu"


@_register
class BatchNormSiLU(_MeanMovingStatistics, core.BatchNormActCore, keras.layers.BatchNormalization):
    __doc__ = core.BatchNormActCore.__doc__
    _keras = keras
    activation = "silu"
