"""tf_keras front-end: the norm-act layers as `tf_keras.layers.Layer` subclasses.

Model Garden builds tf_keras (Keras 2) models; these layers are tracked,
trained and checkpointed there. One class per registered norm-act
(`evonorm_tf.registry`), built from its spec: the core mixin of
`evonorm_tf.norm_act_core` on tf_keras's `Layer` (or on tf_keras's fused
`BatchNormalization` for the BN baselines), the same mixins as the Keras 3
layers.
"""

import tensorflow as tf
import tf_keras

from evonorm_tf import norm_acts, registry

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


def make_layer_class(spec):
    """The tf_keras layer class of a `registry.NormActSpec`."""
    if spec.keras_base == "BatchNormalization":
        bases = (spec.core, tf_keras.layers.BatchNormalization)
    else:
        bases = (_TfKerasWeights, spec.core, tf_keras.layers.Layer)
    namespace = {
        "__doc__": spec.core.__doc__,
        "__module__": __name__,
        "__qualname__": spec.class_name,
        "_keras": tf_keras,
        "activation": spec.post_activation,
    }
    return _register(type(spec.class_name, bases, namespace))


registry.register_front_end("tf_keras", make_layer_class)

__all__ = [spec.class_name for spec in norm_acts.BUILT_IN]
globals().update({spec.class_name: registry.layer_class(spec.name, "tf_keras") for spec in norm_acts.BUILT_IN})
