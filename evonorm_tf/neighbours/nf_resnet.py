"""The normalizer-free ResNet as a Keras 3 functional model.

    model = build_nf_resnet(20, input_shape=(32, 32, 1), num_classes=10)

The graph is `evonorm_tf.modeling.backbones.nf_resnet.nf_resnet_endpoints`,
the one the tf_keras `NFResNet` backbone uses, built with the Keras 3 layers
of `evonorm_tf.neighbours.layers`.

Reference: Brock, De, Smith. arXiv:2101.08692.
"""

import keras

from evonorm_tf import arguments
from evonorm_tf.modeling.backbones.nf_resnet import (
    NFLayers,
    check_options,
    classifier_initializer,
    nf_resnet_endpoints,
)
from evonorm_tf.neighbours.layers import ScaledResidualAdd, ScaledWSConv2D

__all__ = ["KERAS_LAYERS", "build_nf_resnet"]

KERAS_LAYERS = NFLayers(keras, ScaledWSConv2D, ScaledResidualAdd)


def build_nf_resnet(model_id, input_shape, num_classes=None, activation="relu", alpha=0.2, skip_gain_init=0.0,
                    stochastic_depth_drop_rate=0.1, width_multiplier=1.0, scaled_final_activation=True,
                    head_initializer="normal", kernel_initializer="he_normal", kernel_regularizer=None,
                    data_format="channels_last", name=None):
    """A Keras 3 NF-ResNet: a backbone `{level: feature map}`, or a classifier when `num_classes` is set.

    Args:
      model_id: a depth of `NF_RESNET_SPECS` (26, 50, 101; 20, 32, 56 for small inputs).
      input_shape: the shape of one example, e.g. `(32, 32, 3)`.
      num_classes: if set, global average pooling and a dense layer of logits.
      head_initializer: of the dense layer: `"normal"` N(0, 0.01) (default,
        the reference NF-ResNet's), `"zeros"`, or an initializer; bias zero.
      other arguments: as the tf_keras `evonorm_tf.modeling.NFResNet`.
    """
    alpha, skip_gain_init, stochastic_depth_drop_rate, width_multiplier = check_options(
        activation, alpha, skip_gain_init, stochastic_depth_drop_rate, width_multiplier)
    data_format = arguments.check_data_format(data_format)
    inputs = keras.Input(shape=tuple(input_shape))
    endpoints = nf_resnet_endpoints(
        inputs, KERAS_LAYERS, model_id, activation=activation, alpha=alpha, skip_gain_init=skip_gain_init,
        stochastic_depth_drop_rate=stochastic_depth_drop_rate, width_multiplier=width_multiplier,
        scaled_final_activation=scaled_final_activation, kernel_initializer=kernel_initializer,
        kernel_regularizer=kernel_regularizer, data_format=data_format,
    )
    if num_classes is None:
        return keras.Model(inputs, endpoints, name=name or f"nf_resnet{model_id}")
    last = endpoints[max(endpoints, key=int)]
    pooled = keras.layers.GlobalAveragePooling2D(data_format=data_format)(last)
    logits = keras.layers.Dense(num_classes, kernel_initializer=classifier_initializer(keras, head_initializer),
                                dtype="float32", name="logits")(pooled)
    return keras.Model(inputs, logits, name=name or f"nf_resnet{model_id}_classifier")
