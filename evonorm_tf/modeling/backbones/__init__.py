"""Model Garden backbones with a pluggable norm-act; importing registers their builders
(`evonorm_resnet`, `evonorm_efficientnet`, `evonorm_spinenet`) with `official.vision.modeling.backbones.factory`."""

from evonorm_tf.modeling.backbones.efficientnet import (
    EFFICIENTNET_B0_BLOCKS,
    EFFICIENTNET_SCALING,
    NormActEfficientNet,
    build_efficientnet,
)
from evonorm_tf.modeling.backbones.nf_resnet import NF_RESNET_SPECS, NFResNet, build_nf_resnet
from evonorm_tf.modeling.backbones.resnet import RESNET_SPECS, NormActResNet, build_resnet
from evonorm_tf.modeling.backbones.spinenet import (
    SPINENET_BLOCK_SPECS,
    SPINENET_SCALING,
    NormActSpineNet,
    build_spinenet,
)

__all__ = [
    "EFFICIENTNET_B0_BLOCKS",
    "EFFICIENTNET_SCALING",
    "NF_RESNET_SPECS",
    "NFResNet",
    "NormActEfficientNet",
    "NormActResNet",
    "NormActSpineNet",
    "RESNET_SPECS",
    "SPINENET_BLOCK_SPECS",
    "SPINENET_SCALING",
    "build_efficientnet",
    "build_nf_resnet",
    "build_resnet",
    "build_spinenet",
]
