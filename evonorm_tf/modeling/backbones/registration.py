"""One Model Garden builder for every backbone here.

Model Garden calls a backbone builder as `builder(input_specs,
backbone_config, norm_activation_config, l2_regularizer)`. The builder made by
`register_backbone` passes the active sub-config's fields (`backbone.<type>`)
to the backbone class as keyword arguments of the same names, and replaces the
sub-config's `norm_activation` block by a `NormActFactory` that also reads
Model Garden's model-level `norm_activation_config` (`task.model.norm_activation`):
`use_sync_bn` → `synchronized`, `norm_momentum` → `momentum`, `norm_epsilon` →
`epsilon`, each one unless the backbone's own block sets it
(`evonorm_tf.modeling.norm_act.options_from_config`). This is how Model
Garden's own builders (`official.vision.modeling.backbones.resnet.build_resnet`)
hand the model-level options to every BN of their backbones.
"""

import inspect

import tf_keras
from official.vision.modeling.backbones import factory as backbone_factory

from evonorm_tf.modeling import norm_act as norm_act_lib

# Set by the builder, never by a config field.
BUILDER_ARGUMENTS = ("input_specs", "norm_act", "norm_act_options", "kernel_regularizer", "data_format")


def _accepted_arguments(backbone_class):
    parameters = inspect.signature(backbone_class.__init__).parameters
    return {
        name for name, parameter in parameters.items()
        if name != "self" and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }


def backbone_arguments(backbone_config, backbone_class, norm_activation_config=None, data_format="channels_last"):
    """The keyword arguments of `backbone_class` for the sub-config `backbone_config`.

    Every field becomes the argument of the same name; a `norm_activation`
    block becomes `norm_act`, a `NormActFactory` with the precedence of
    `options_from_config` over `norm_activation_config` (Model Garden's
    model-level block, or None).

    Raises:
      ValueError: for a field `backbone_class` has no argument for.
    """
    arguments = backbone_config.as_dict()
    accepted = _accepted_arguments(backbone_class) - set(BUILDER_ARGUMENTS)
    if "norm_activation" in arguments:
        del arguments["norm_activation"]
        arguments["norm_act"] = norm_act_lib.norm_act_factory_from_config(
            backbone_config.norm_activation, data_format, norm_activation_config
        )
        accepted.add("norm_act")
    unknown = sorted(set(arguments) - accepted)
    if unknown:
        raise ValueError(
            f"{backbone_class.__name__} has no argument for the config fields {unknown}; "
            f"received config {backbone_config.as_dict()!r}"
        )
    return arguments


def register_backbone(backbone_type, backbone_class):
    """Registers the Model Garden builder of `backbone.type: backbone_type` and returns it.

    The builder raises `ValueError` when called with a config of another
    type, and builds `backbone_class` with Keras' image data format, the
    config's fields (`backbone_arguments`) and the L2 regularizer on its
    convolution kernels.
    """

    def builder(input_specs, backbone_config, norm_activation_config=None, l2_regularizer=None):
        if backbone_config.type != backbone_type:
            raise ValueError(f"expected backbone type {backbone_type!r}, received {backbone_config.type!r}")
        data_format = tf_keras.backend.image_data_format()
        arguments = backbone_arguments(backbone_config.get(), backbone_class, norm_activation_config, data_format)
        return backbone_class(
            input_specs=input_specs, kernel_regularizer=l2_regularizer, data_format=data_format, **arguments
        )

    builder.__name__ = builder.__qualname__ = f"build_{backbone_type}_backbone"
    builder.__doc__ = (
        f"Model Garden builder for `backbone.type: {backbone_type}`: a `{backbone_class.__name__}` "
        f"(`{backbone_class.__module__}`)."
    )
    return backbone_factory.register_backbone_builder(backbone_type)(builder)
