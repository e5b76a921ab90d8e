"""A classification head on a backbone's last level, for models used outside Model Garden.

Model Garden builds its own head (`ClassificationModel`); these helpers serve
`build_resnet(..., num_classes=...)`, `build_nf_resnet` and `build_efficientnet`
for direct use.
"""

import tf_keras


def input_specs_from(input_specs, input_shape):
    """`input_specs`, or one built from `input_shape` (the shape of one example)."""
    if input_specs is not None and input_shape is not None:
        raise ValueError(
            f"pass input_specs or input_shape, not both; received input_specs={input_specs!r} "
            f"and input_shape={input_shape!r}"
        )
    if input_shape is not None:
        return tf_keras.layers.InputSpec(shape=[None, *input_shape])
    return input_specs


def as_input_spec(input_specs):
    """An `InputSpec` from None (`[None, None, None, 3]`), an `InputSpec`, or a
    serialized shape list (what the backbones' `get_config` stores)."""
    if input_specs is None:
        return tf_keras.layers.InputSpec(shape=[None, None, None, 3])
    if isinstance(input_specs, (list, tuple)):
        return tf_keras.layers.InputSpec(shape=list(input_specs))
    return input_specs


def classifier_head(backbone, num_classes, kernel_regularizer=None, dropout_rate=0.0,
                    kernel_initializer="glorot_uniform"):
    """Global average pooling of the backbone's last level, dropout, then logits."""
    inputs = tf_keras.Input(shape=backbone.input_shape[1:])
    endpoints = backbone(inputs)
    last = endpoints[max(endpoints, key=int)]
    data_format = backbone.get_config()["data_format"]
    x = tf_keras.layers.GlobalAveragePooling2D(data_format=data_format)(last)
    if dropout_rate:
        x = tf_keras.layers.Dropout(dropout_rate)(x)
    logits = tf_keras.layers.Dense(
        num_classes, kernel_regularizer=kernel_regularizer, kernel_initializer=kernel_initializer,
        dtype="float32", name="logits",
    )(x)
    return tf_keras.Model(inputs=inputs, outputs=logits, name=f"{backbone.name}_classifier")


def backbone_or_classifier(backbone_class, model_id, input_shape=None, input_specs=None, num_classes=None,
                           dropout_rate=0.0, head_initializer="glorot_uniform", **kwargs):
    """`backbone_class(model_id, input_specs=..., **kwargs)`, or a classifier on it when `num_classes` is given.

    `input_shape` (one example's shape) or `input_specs` gives the input;
    the classifier's dense layer gets the backbone's `kernel_regularizer`.
    """
    backbone = backbone_class(model_id, input_specs=input_specs_from(input_specs, input_shape), **kwargs)
    if num_classes is None:
        return backbone
    return classifier_head(backbone, num_classes, kwargs.get("kernel_regularizer"), dropout_rate, head_initializer)
