"""Registers a backbone with Model Garden's backbone factory.

Model Garden calls a backbone builder as `builder(input_specs, backbone_config,
norm_activation_config, l2_regularizer)`. Every backbone here reads only its
own config (`backbone_config.get()`, which carries its own norm-act); the
model-level `norm_activation_config` holds plain BN options and is not used.
"""

import tf_keras

from official.vision.modeling.backbones import factory as backbone_factory


def register_backbone(backbone_type, build):
    """Registers `build(config, input_specs, data_format, kernel_regularizer)` for `backbone.type`.

    Returns the Model Garden builder. It raises `ValueError` when called with
    a config of another type, and builds with Keras' image data format.
    """

    def builder(input_specs, backbone_config, norm_activation_config, l2_regularizer=None):
        del norm_activation_config  # the backbone config carries its own norm-act
        if backbone_config.type != backbone_type:
            raise ValueError(f"expected backbone type {backbone_type!r}, received {backbone_config.type!r}")
        return build(backbone_config.get(), input_specs, tf_keras.backend.image_data_format(), l2_regularizer)

    builder.__name__ = builder.__qualname__ = f"build_{backbone_type}_backbone"
    builder.__doc__ = f"Model Garden builder for `backbone.type: {backbone_type}`; see `{build.__module__}`."
    return backbone_factory.register_backbone_builder(backbone_type)(builder)
