"""tf_keras (Keras 2) norm-act layers for Model Garden and other tf_keras models.

    import tf_keras
    from evonorm_tf import tf_keras as evonorm

    x = tf_keras.Input((32, 32, 64))
    y = evonorm.get_norm_act("evonorm_s0", groups=8)(x)
"""

from evonorm_tf import factory as _factory
from evonorm_tf.tf_keras import layers
from evonorm_tf.tf_keras.layers import (
    BatchNormReLU,
    BatchNormSiLU,
    EvoNormB0,
    EvoNormB1,
    EvoNormB2,
    EvoNormS0,
    EvoNormS1,
    EvoNormS2,
    FilterResponseNormTLU,
    GroupNormReLU,
    GroupNormSiLU,
)
from evonorm_tf.tf_keras.shadow_batch_norm import ShadowBatchNormalization

NORM_ACT_NAMES = _factory.NORM_ACT_NAMES
TF_KERAS_TABLE = _factory.table_for(layers)


def get_norm_act(name, /, **kwargs):
    """Builds the tf_keras norm-act layer `name`; see `evonorm_tf.get_norm_act`."""
    if isinstance(name, str) and name.strip().lower().startswith("graph:"):
        from evonorm_tf.search import layers as search_layers  # a searched layer, loaded lazily

        return search_layers.TfKerasGraphNormAct(graph=name, **kwargs)
    return _factory.lookup(TF_KERAS_TABLE, name)(**kwargs)


__all__ = ["NORM_ACT_NAMES", "ShadowBatchNormalization", "get_norm_act", *layers.__all__]
