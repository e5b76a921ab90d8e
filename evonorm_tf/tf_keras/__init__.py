"""tf_keras (Keras 2) norm-act layers for Model Garden and other tf_keras models.

    import tf_keras
    from evonorm_tf import tf_keras as evonorm

    x = tf_keras.Input((32, 32, 64))
    y = evonorm.get_norm_act("evonorm_s0", groups=8)(x)
"""

from evonorm_tf import registry
from evonorm_tf.factory import NORM_ACT_NAMES
from evonorm_tf.tf_keras import layers
from evonorm_tf.tf_keras.layers import *  # noqa: F401,F403  (one class per registered norm-act)
from evonorm_tf.tf_keras.shadow_batch_norm import ShadowBatchNormalization

#: name → tf_keras layer class of the built-in norm-acts.
TF_KERAS_TABLE = {name: registry.layer_class(name, "tf_keras") for name in NORM_ACT_NAMES}


def get_norm_act(name, /, **kwargs):
    """Builds the tf_keras norm-act layer `name`; see `evonorm_tf.get_norm_act`."""
    return registry.build(name, "tf_keras", **kwargs)


__all__ = ["NORM_ACT_NAMES", "ShadowBatchNormalization", "get_norm_act", *layers.__all__]
