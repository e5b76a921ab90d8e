"""tf_keras front-end: the norm-act layers as `tf_keras.layers.Layer` subclasses.

Model Garden builds tf_keras (Keras 2) models; these layers are tracked,
trained and checkpointed there. The math is shared with the Keras 3 layers
(`evonorm_tf.formulas`, `evonorm_tf.norm_act_core`).
"""

import tensorflow as tf
import tf_keras

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

_register = tf_keras.utils.register_keras_serializable(package="evonorm_tf")


class _TfKerasWeights:
    _keras = tf_keras

    def _add_channel_weight(self, name, channels, initializer, regularizer=None,
                            constraint=None, trainable=True):
        # Moving statistics are kept per replica and averaged on read, as
        # tf_keras's BatchNormalization does.
        distribution = {} if trainable else {
            "synchronization": tf.VariableSynchronization.ON_READ,
            "aggregation": tf.VariableAggregation.MEAN,
        }
        return self.add_weight(
            name=name,
            shape=(channels,),
            dtype=tf.float32,
            initializer=initializer,
            regularizer=regularizer,
            constraint=constraint,
            trainable=trainable,
            experimental_autocast=False,
            **distribution,
        )


@_register
class EvoNormB0(_TfKerasWeights, core.EvoNormB0Core, tf_keras.layers.Layer):
    __doc__ = core.EvoNormB0Core.__doc__


@_register
class EvoNormB1(_TfKerasWeights, core.EvoNormB1Core, tf_keras.layers.Layer):
    __doc__ = core.EvoNormB1Core.__doc__


@_register
class EvoNormB2(_TfKerasWeights, core.EvoNormB2Core, tf_keras.layers.Layer):
    __doc__ = core.EvoNormB2Core.__doc__


@_register
class EvoNormS0(_TfKerasWeights, core.EvoNormS0Core, tf_keras.layers.Layer):
    __doc__ = core.EvoNormS0Core.__doc__


@_register
class EvoNormS1(_TfKerasWeights, core.EvoNormS1Core, tf_keras.layers.Layer):
    __doc__ = core.EvoNormS1Core.__doc__


@_register
class EvoNormS2(_TfKerasWeights, core.EvoNormS2Core, tf_keras.layers.Layer):
    __doc__ = core.EvoNormS2Core.__doc__


@_register
class FilterResponseNormTLU(_TfKerasWeights, core.FilterResponseNormTLUCore, tf_keras.layers.Layer):
    __doc__ = core.FilterResponseNormTLUCore.__doc__


@_register
class GroupNormReLU(_TfKerasWeights, core.GroupNormActCore, tf_keras.layers.Layer):
    __doc__ = core.GroupNormActCore.__doc__
    activation = "relu"


@_register
class GroupNormSiLU(_TfKerasWeights, core.GroupNormActCore, tf_keras.layers.Layer):
    __doc__ = core.GroupNormActCore.__doc__
    activation = "silu"


@_register
class BatchNormReLU(core.BatchNormActCore, tf_keras.layers.BatchNormalization):
    __doc__ = core.BatchNormActCore.__doc__
    _keras = tf_keras
    activation = "relu"


@_register
class BatchNormSiLU(core.BatchNormActCore, tf_keras.layers.BatchNormalization):
    __doc__ = core.BatchNormActCore.__doc__
    _keras = tf_keras
    activation = "silu"
