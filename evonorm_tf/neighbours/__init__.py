"""Keras 3 layers and models of the neighbouring systems: NF-ResNets and MixPath.

The tf_keras versions (for Model Garden) live in `evonorm_tf.modeling`; these
share their formulas and layer logic:

- `ScaledWSConv2D`, `ScaledResidualAdd`: Scaled WS convolution and the
  normalizer-free residual merge (arXiv:2101.08692).
- `MultiPathBlock`: the multi-path block with Shadow BN (arXiv:2001.05887).
- `build_nf_resnet`: the NF-ResNet as a Keras 3 functional model.
"""

from evonorm_tf.neighbours.layers import MultiPathBlock, ScaledResidualAdd, ScaledWSConv2D
from evonorm_tf.neighbours.nf_resnet import KERAS_LAYERS, build_nf_resnet

__all__ = ["KERAS_LAYERS", "MultiPathBlock", "ScaledResidualAdd", "ScaledWSConv2D", "build_nf_resnet"]
