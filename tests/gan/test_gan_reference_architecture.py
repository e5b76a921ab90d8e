"""BigGAN 128 has compare_gan's parameter counts (resnet_biggan.py: G 70,433,988, D 87,982,370)."""

import numpy as np
import pytest
import tensorflow as tf

from evonorm_tf.gan import blocks
from evonorm_tf.gan.discriminator import Discriminator
from evonorm_tf.gan.generator import Generator


def _count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _compare_gan_generator(ch, z_dim, shared_dim, num_classes):
    """Trainable parameters of compare_gan's `resnet_biggan.Generator` at 128x128, from its layers:
    embed_y (no bias), fc_noise (bias), per block two conditional BNs whose γ and β are
    bias-free linear maps of [z chunk, embedding], conv1/conv2 3x3 and a 1x1 shortcut (biases),
    a bias-free non-local block after B4, the unconditional final BN (γ, β) and final_conv."""
    widths = [16 * ch, 16 * ch, 8 * ch, 4 * ch, 2 * ch, ch]
    chunk = z_dim // len(widths)
    condition = chunk + shared_dim
    total = num_classes * shared_dim + chunk * 16 * widths[0] + 16 * widths[0]
    for c_in, c_out in zip(widths, widths[1:]):
        total += 2 * condition * c_in + 2 * condition * c_out
        total += 9 * c_in * c_out + c_out + 9 * c_out * c_out + c_out + c_in * c_out + c_out
    total += _non_local(2 * ch)
    return total + 2 * ch + 9 * ch * 3 + 3


def _compare_gan_discriminator(ch, num_classes, colors=3):
    """compare_gan's `resnet_biggan.Discriminator` at 128x128: blocks to 1, 2, 4, 8, 16, 16·ch,
    a 1x1 shortcut only where the width changes, a non-local block after B1, final_fc (bias)
    and the bias-free class embedding of the projection."""
    outs = [ch, 2 * ch, 4 * ch, 8 * ch, 16 * ch, 16 * ch]
    total = 0
    for c_in, c_out in zip([colors] + outs[:-1], outs):
        total += 9 * c_in * c_out + c_out + 9 * c_out * c_out + c_out
        if c_in != c_out:
            total += c_in * c_out + c_out
    total += _non_local(ch)
    return total + 16 * ch + 1 + num_classes * 16 * ch


def _non_local(c):
    return 2 * c * (c // 8) + c * (c // 2) + (c // 2) * c + 1


def test_formulas_reproduce_compare_gan_counts():
    # The counts in compare_gan's resnet_biggan.py docstring for 128x128 (ch 96, z 120,
    # embed_y_dim 128, 1000 classes).
    assert _compare_gan_generator(96, 120, 128, 1000) == 70_433_988
    assert _compare_gan_discriminator(96, 1000) == 87_982_370


def test_small_models_follow_the_reference_layers():
    ch, z_dim, shared, classes = 8, 24, 8, 10
    G = Generator(resolution=128, ch=ch, z_dim=z_dim, shared_dim=shared, num_classes=classes,
                  norm_act="bn_relu")
    G((tf.zeros((1, z_dim)), tf.zeros((1,), tf.int32)))
    assert _count(G) == _compare_gan_generator(ch, z_dim, shared, classes)
    D = Discriminator(resolution=128, ch=ch, num_classes=classes)
    D((tf.zeros((1, 128, 128, 3)), tf.zeros((1,), tf.int32)))
    assert _count(D) == _compare_gan_discriminator(ch, classes)
    # The last block keeps the width and does not downsample: identity skip, no 1x1 conv.
    assert D.blocks[-1].shortcut is None
    assert all(block.shortcut is not None for block in D.blocks[:-1])


def test_identity_shortcut_block_adds_its_input():
    block = blocks.DiscriminatorBlock(8, downsample=False)
    x = tf.random.normal((2, 4, 4, 8))
    block(x)
    for conv in (block.conv1, block.conv2):
        conv.layer.kernel.assign(tf.zeros_like(conv.layer.kernel))
    np.testing.assert_allclose(block(x).numpy(), x.numpy(), atol=1e-6)
    assert blocks.DiscriminatorBlock(8, downsample=True).shortcut is None  # decided in build


@pytest.mark.slow
def test_paper_size_counts_equal_compare_gan():
    G = Generator(resolution=128, ch=96, z_dim=120, shared_dim=128, num_classes=1000,
                  norm_act="bn_relu")
    G((tf.zeros((1, 120)), tf.zeros((1,), tf.int32)))
    assert _count(G) == 70_433_988
    D = Discriminator(resolution=128, ch=96, num_classes=1000)
    D((tf.zeros((1, 32, 32, 3)), tf.zeros((1,), tf.int32)))  # sizes do not depend on the image
    assert _count(D) == 87_982_370
