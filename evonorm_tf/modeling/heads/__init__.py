"""Model Garden's Mask R-CNN heads with a named norm-act in place of BN + activation."""

from evonorm_tf.modeling.heads.instance_heads import (
    NormActDetectionHead,
    NormActMaskHead,
    NormActRPNHead,
    PerRoiNormAct,
)

__all__ = ["NormActDetectionHead", "NormActMaskHead", "NormActRPNHead", "PerRoiNormAct"]
