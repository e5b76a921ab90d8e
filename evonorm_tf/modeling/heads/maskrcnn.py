"""Model Garden's Mask R-CNN with the norm-act heads.

Model Garden builds the RPN, detection and mask heads inside
`official.vision.modeling.factory.build_maskrcnn`, with BN + activation. This
builder lets Model Garden build the model (backbone and decoder through their
registered builders, so `evonorm_resnet` and `evonorm_fpn` work), then
rebuilds the `MaskRCNNModel` from its own config with each head replaced by the
norm-act head of the same arguments (`heads_norm_activation` of
`evonorm_tf.configs.maskrcnn.MaskRCNN`). Everything else (RoI generator,
sampler, aligner, detection generator, anchors) stays Model Garden's.

Norm options. Each head's norm-acts take the BN options Model Garden's
`build_maskrcnn` gave the head they replace (`use_sync_bn`, `norm_momentum`,
`norm_epsilon` from the model-level `norm_activation`; the mask head gets no
`use_sync_bn` there, so its statistics stay per replica), except where
`heads_norm_activation` sets `synchronized`, `momentum` or `epsilon` itself.
With `bn_relu` and no such field set, every head is Model Garden's.
"""

import tf_keras
from official.vision.modeling import factory as mg_factory
from official.vision.modeling import maskrcnn_model

from evonorm_tf.modeling import norm_act as norm_act_lib
from evonorm_tf.modeling.heads.instance_heads import (
    NormActDetectionHead,
    NormActMaskHead,
    NormActRPNHead,
)

# Arguments of Model Garden's heads that the norm-act replaces.
_BN_ARGUMENTS = ("activation", "use_sync_bn", "norm_momentum", "norm_epsilon")


def _norm_act_head(norm_act_class, model_garden_head, norm_act_config):
    """`norm_act_class` with the arguments of `model_garden_head`; its BN options are the fallback."""
    head_config = model_garden_head.get_config()
    make_norm_act = norm_act_lib.norm_act_factory_from_config(
        norm_act_config, tf_keras.backend.image_data_format(), head_config
    )
    arguments = {k: v for k, v in head_config.items() if k not in _BN_ARGUMENTS}
    return norm_act_class(norm_act=make_norm_act, name=model_garden_head.name, **arguments)


def build_maskrcnn(input_specs, model_config, l2_regularizer=None):
    """A Model Garden `MaskRCNNModel` whose RPN, detection and mask heads use one norm-act.

    Args:
      input_specs: `tf_keras.layers.InputSpec` of the images.
      model_config: an `evonorm_tf.configs.maskrcnn.MaskRCNN`.
      l2_regularizer: regularizer of the kernels (Model Garden's weight decay).
    """
    heads_config = model_config.heads_norm_activation
    reference = mg_factory.build_maskrcnn(input_specs, model_config, l2_regularizer)
    config = dict(reference.get_config())
    config["rpn_head"] = _norm_act_head(NormActRPNHead, config["rpn_head"], heads_config)
    detection_heads = config["detection_head"]
    if isinstance(detection_heads, (list, tuple)):  # cascade R-CNN
        config["detection_head"] = [
            _norm_act_head(NormActDetectionHead, head, heads_config) for head in detection_heads
        ]
    else:
        config["detection_head"] = _norm_act_head(NormActDetectionHead, detection_heads, heads_config)
    if config["mask_head"] is not None:
        config["mask_head"] = _norm_act_head(NormActMaskHead, config["mask_head"], heads_config)
    # Build the RPN head on the decoder's features, as Model Garden's builder
    # does, from their shapes (tracing the backbone and decoder again costs
    # seconds). With an identity decoder (None) the model builds it on first call.
    if config["decoder"] is not None:
        specs = config["decoder"].output_specs
        config["rpn_head"]({level: tf_keras.Input(shape[1:]) for level, shape in specs.items()})
    return maskrcnn_model.MaskRCNNModel(**config)
