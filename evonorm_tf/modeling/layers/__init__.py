"""tf_keras layers of the neighbouring systems: Scaled WS convolution (NF-ResNets),
the normalizer-free residual merge, and the Shadow-BN multi-path block (MixPath)."""

from evonorm_tf.modeling.layers.multipath import MultiPathBlock, build_shadow_bn_convnet
from evonorm_tf.modeling.layers.residual import ScaledResidualAdd
from evonorm_tf.modeling.layers.scaled_ws_conv import (
    ACTIVATION_GAINS,
    ScaledWSConv2D,
    activation_gain_constant,
    scaled_standardized_kernel,
)

__all__ = [
    "ACTIVATION_GAINS",
    "MultiPathBlock",
    "ScaledResidualAdd",
    "ScaledWSConv2D",
    "activation_gain_constant",
    "build_shadow_bn_convnet",
    "scaled_standardized_kernel",
]
