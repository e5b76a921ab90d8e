"""evonorm_tf: EvoNorm normalization-activation layers for TensorFlow.

Keras 3 layers are importable from here; tf_keras layers (for Model Garden)
from `evonorm_tf.tf_keras`. Every norm-act is one spec in `evonorm_tf.registry`;
the formulas are in `evonorm_tf.formulas`, the statistics in
`evonorm_tf.statistics`. Importing the package loads the layer library only:
Model Garden backbones (`evonorm_tf.modeling`, `evonorm_tf.configs`), BigGAN
(`evonorm_tf.gan`) and the layer search (`evonorm_tf.search`) are extensions
that register into it when imported.

    import keras, evonorm_tf

    inputs = keras.Input((32, 32, 64))
    outputs = evonorm_tf.EvoNormB0()(keras.layers.Conv2D(64, 3)(inputs))
"""

# `python -m evonorm_tf.<command>`: TensorFlow's C++ start-up lines stay off the console.
from evonorm_tf import console_logging as _console_logging  # noqa: I001  (before TensorFlow)

_console_logging.quiet_command_start()

# Keras before TensorFlow: under KERAS_BACKEND=torch, Keras loads PyTorch's compiler
# (Triton), whose LLVM crashes when loaded after TensorFlow's.
import keras  # noqa: E402,F401,I001

from evonorm_tf import formulas, registry, statistics  # noqa: E402
from evonorm_tf.factory import NORM_ACT_NAMES, get_norm_act  # noqa: E402
from evonorm_tf.layers import (  # noqa: E402
    BatchNormReLU,
    BatchNormSiLU,
    EvoNormB0,
    EvoNormB1,
    EvoNormB2,
    EvoNormS0,
    EvoNormS1,
    EvoNormS2,
    FilterResponseNormTLU,
    GroupNormReLU,
    GroupNormSiLU,
)
from evonorm_tf.shadow_batch_norm import ShadowBatchNormalization  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "BatchNormReLU",
    "BatchNormSiLU",
    "EvoNormB0",
    "EvoNormB1",
    "EvoNormB2",
    "EvoNormS0",
    "EvoNormS1",
    "EvoNormS2",
    "FilterResponseNormTLU",
    "GroupNormReLU",
    "GroupNormSiLU",
    "NORM_ACT_NAMES",
    "ShadowBatchNormalization",
    "formulas",
    "get_norm_act",
    "registry",
    "statistics",
]
