"""BigGAN with EvoNorm generators (tf_keras); see docs/biggan.md.

    from evonorm_tf import gan

    G = gan.Generator(resolution=32, num_classes=10, norm_act="evonorm_b0")
    D = gan.Discriminator(resolution=32, num_classes=10)
    trainer = gan.GANTrainer(G, D, gan.Generator(resolution=32, num_classes=10, norm_act="evonorm_b0"))
"""

from evonorm_tf.gan import (architectures, deep_blocks, evaluation, losses, standing_statistics,
                            truncation)
from evonorm_tf.gan.conditional_norm import ConditionalNormAct
from evonorm_tf.gan.discriminator import Discriminator
from evonorm_tf.gan.generator import Generator
from evonorm_tf.gan.spectral_norm import SpectralNormalization
from evonorm_tf.gan.training import GANTrainer

__all__ = [
    "ConditionalNormAct",
    "Discriminator",
    "GANTrainer",
    "Generator",
    "SpectralNormalization",
    "architectures",
    "deep_blocks",
    "evaluation",
    "losses",
    "standing_statistics",
    "truncation",
]
