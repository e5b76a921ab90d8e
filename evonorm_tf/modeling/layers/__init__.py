"""tf_keras layers of the neighbouring systems: Scaled WS convolution (NF-ResNets),
the normalizer-free residual merge, the Shadow-BN multi-path block (MixPath), its
sampler and BN recalibration. Keras 3 versions: `evonorm_tf.neighbours`."""

from evonorm_tf.modeling.layers.bn_recalibration import recalibrate_batch_norm
from evonorm_tf.modeling.layers.multipath import MultiPathBlock, build_shadow_bn_convnet, sample_path_mask
from evonorm_tf.modeling.layers.residual import ScaledResidualAdd
from evonorm_tf.modeling.layers.scaled_ws_conv import (
    ACTIVATION_GAINS,
    REFERENCE_ACTIVATION_GAINS,
    ScaledWSConv2D,
    activation_gain_constant,
    scaled_standardized_kernel,
)

__all__ = [
    "ACTIVATION_GAINS",
    "MultiPathBlock",
    "REFERENCE_ACTIVATION_GAINS",
    "ScaledResidualAdd",
    "ScaledWSConv2D",
    "activation_gain_constant",
    "build_shadow_bn_convnet",
    "recalibrate_batch_norm",
    "sample_path_mask",
    "scaled_standardized_kernel",
]
