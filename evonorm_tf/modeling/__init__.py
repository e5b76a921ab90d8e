"""tf_keras models for Model Garden whose normalization-activations are chosen by name.

    from evonorm_tf.modeling import build_resnet

    model = build_resnet(20, "evonorm_s0", input_shape=(32, 32, 1), num_classes=10)

Backbones: `NormActResNet` (pre-activation v2 and v1.5), `NormActEfficientNet`
(B0…B7), `NormActSpineNet` (49S…190). Importing this package registers the Model
Garden backbone builders `evonorm_resnet`, `evonorm_efficientnet` and
`evonorm_spinenet`; `evonorm_tf.configs` adds the
configs and experiments.
"""

from evonorm_tf.modeling.backbones import (
    EFFICIENTNET_B0_BLOCKS,
    EFFICIENTNET_SCALING,
    NF_RESNET_SPECS,
    RESNET_SPECS,
    NFResNet,
    NormActEfficientNet,
    NormActResNet,
    NormActSpineNet,
    build_efficientnet,
    build_nf_resnet,
    build_resnet,
    build_spinenet,
)
from evonorm_tf.modeling.norm_act import NormActFactory, divisor_groups

# Searched layers are norm-acts of every backbone: `evonorm_tf.search` registers
# the `graph:<canonical>` names with the core registry when imported.
from evonorm_tf import search as _search  # noqa: E402,F401

__all__ = [
    "EFFICIENTNET_B0_BLOCKS",
    "EFFICIENTNET_SCALING",
    "NF_RESNET_SPECS",
    "NFResNet",
    "NormActEfficientNet",
    "NormActFactory",
    "NormActResNet",
    "NormActSpineNet",
    "RESNET_SPECS",
    "build_efficientnet",
    "build_nf_resnet",
    "build_resnet",
    "build_spinenet",
    "divisor_groups",
]
