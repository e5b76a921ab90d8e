"""tf_keras front-end of Shadow Batch Normalization, for Model Garden models.

The logic is shared with the Keras 3 layer (`evonorm_tf.shadow_batch_norm`).
"""

import tensorflow as tf
import tf_keras

from evonorm_tf.shadow_batch_norm import ShadowBatchNormCore

__all__ = ["ShadowBatchNormalization"]


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class ShadowBatchNormalization(ShadowBatchNormCore, tf_keras.layers.Layer):
    __doc__ = ShadowBatchNormCore.__doc__
    _keras = tf_keras

    def _add_stacked_weight(self, name, shape, initializer, trainable):
        # Moving statistics are kept per replica and averaged on read, as
        # tf_keras's BatchNormalization does.
        distribution = {} if trainable else {
            "synchronization": tf.VariableSynchronization.ON_READ,
            "aggregation": tf.VariableAggregation.MEAN,
        }
        return self.add_weight(
            name=name,
            shape=shape,
            dtype=tf.float32,
            initializer=initializer,
            trainable=trainable,
            experimental_autocast=False,
            **distribution,
        )
