"""Model Garden backbones with a pluggable norm-act; importing registers their builders
(`evonorm_resnet`, `evonorm_efficientnet`) with `official.vision.modeling.backbones.factory`."""

from evonorm_tf.modeling.backbones.efficientnet import (
    EFFICIENTNET_B0_BLOCKS,
    EFFICIENTNET_SCALING,
    NormActEfficientNet,
    build_efficientnet,
)
from evonorm_tf.modeling.backbones.nf_resnet import NF_RESNET_SPECS, NFResNet, build_nf_resnet
from evonorm_tf.modeling.backbones.resnet import RESNET_SPECS, NormActResNet, build_resnet

__all__ = [
    "EFFICIENTNET_B0_BLOCKS",
    "EFFICIENTNET_SCALING",
    "NF_RESNET_SPECS",
    "NFResNet",
    "NormActEfficientNet",
    "NormActResNet",
    "RESNET_SPECS",
    "build_efficientnet",
    "build_nf_resnet",
    "build_resnet",
]
