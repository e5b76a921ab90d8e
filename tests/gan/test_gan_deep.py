"""BigGAN-deep: bottleneck blocks against NumPy, skip connections, layout, conditioning, sizes."""

import numpy as np
import pytest
import tensorflow as tf

from evonorm_tf.gan import architectures
from evonorm_tf.gan.conditional_norm import ConditionalNormAct
from evonorm_tf.gan.deep_blocks import DeepDiscriminatorBlock, DeepGeneratorBlock
from evonorm_tf.gan.discriminator import Discriminator
from evonorm_tf.gan.generator import Generator
from evonorm_tf.gan.training import GANTrainer

DEEP = "biggan_deep"


def _count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# --- NumPy float64 references -------------------------------------------------------------

def _conv(x, kernel, bias):
    """'same' convolution, stride 1, odd square kernel [k, k, in, out]."""
    k = kernel.shape[0]
    pad = k // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    height, width = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for dy in range(k):
        for dx in range(k):
            out += padded[:, dy:dy + height, dx:dx + width, :] @ kernel[dy, dx]
    return out + bias


def _avg_pool(x):
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _upsample(x):
    return np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)


def _relu(x):
    return np.maximum(x, 0.0)


def _weights(layer):
    kernel = layer.kernel.numpy().astype(np.float64)
    bias = layer.bias.numpy() if layer.bias is not None else np.zeros(kernel.shape[-1])
    return kernel, bias.astype(np.float64)


def _conditional_bn_relu(norm, x, condition):
    """relu(BN_batch(x) · (1 + c·W_γ + b_γ) + c·W_β + b_β), BN with batch statistics."""
    mean = x.mean(axis=(0, 1, 2))
    variance = x.var(axis=(0, 1, 2))
    normalized = (x - mean) / np.sqrt(variance + norm.inner.epsilon)
    w_gain, b_gain = _weights(norm.gain_projection)
    w_bias, b_bias = _weights(norm.bias_projection)
    gain = 1.0 + condition @ w_gain + b_gain
    bias = condition @ w_bias + b_bias
    return _relu(normalized * gain[:, None, None, :] + bias[:, None, None, :])


# --- blocks -------------------------------------------------------------------------------

def _randomize(layer, seed):
    rng = np.random.default_rng(seed)
    for weight in layer.trainable_weights:
        weight.assign(rng.normal(0.0, 0.3, weight.shape))


@pytest.mark.parametrize("upsample", [True, False])
def test_generator_block_matches_numpy(upsample):
    block = DeepGeneratorBlock(8, upsample=upsample, norm_act="bn_relu", use_sn=False)
    x = tf.random.stateless_normal((3, 4, 4, 16), (1, 2))
    condition = tf.random.stateless_normal((3, 5), (3, 4))
    block(x, condition)
    _randomize(block, 0)
    assert block.reduce.filters == block.conv1.filters == block.conv2.filters == 16 // 4
    got = block(x, condition, training=True).numpy()

    xs, c = x.numpy().astype(np.float64), condition.numpy().astype(np.float64)
    h = _conv(_conditional_bn_relu(block.norms[0], xs, c), *_weights(block.reduce))
    h = _conditional_bn_relu(block.norms[1], h, c)
    h = _conv(_upsample(h) if upsample else h, *_weights(block.conv1))
    h = _conv(_conditional_bn_relu(block.norms[2], h, c), *_weights(block.conv2))
    h = _conv(_conditional_bn_relu(block.norms[3], h, c), *_weights(block.expand))
    skip = xs[..., :8]
    expected = h + (_upsample(skip) if upsample else skip)
    assert got.shape == expected.shape == ((3, 8, 8, 8) if upsample else (3, 4, 4, 8))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_generator_block_skip_drops_channels():
    # With the residual branch's last convolution zeroed, the block is its skip:
    # the input's first `filters` channels, upsampled (no 1x1 convolution).
    block = DeepGeneratorBlock(6, upsample=True, norm_act="evonorm_b0")
    x = tf.random.stateless_normal((2, 4, 4, 12), (5, 6))
    condition = tf.random.stateless_normal((2, 7), (7, 8))
    before = block(x, condition, training=True).numpy()
    block.expand.layer.kernel.assign(tf.zeros_like(block.expand.layer.kernel))
    block.expand.layer.bias.assign(tf.zeros_like(block.expand.layer.bias))
    got = block(x, condition, training=True).numpy()
    expected = _upsample(x.numpy()[..., :6])
    np.testing.assert_array_equal(got, expected)
    assert np.abs(before - expected).max() > 1e-3  # the branch did contribute before
    # The only convolutions are the branch's four (no 1x1 conv on the skip).
    kernels = [w.shape.as_list() for w in block.trainable_weights if w.shape.rank == 4]
    assert kernels == [[1, 1, 12, 3], [3, 3, 3, 3], [3, 3, 3, 3], [1, 1, 3, 6]]


@pytest.mark.parametrize("downsample", [True, False])
def test_discriminator_block_matches_numpy(downsample):
    block = DeepDiscriminatorBlock(16, downsample=downsample, use_sn=False)
    x = tf.random.stateless_normal((2, 8, 8, 4), (9, 10))
    block(x)
    _randomize(block, 1)
    got = block(x).numpy()

    xs = x.numpy().astype(np.float64)
    h = _conv(_relu(xs), *_weights(block.reduce))
    h = _conv(_relu(h), *_weights(block.conv1))
    h = _relu(_conv(_relu(h), *_weights(block.conv2)))
    skip = xs
    if downsample:
        h, skip = _avg_pool(h), _avg_pool(skip)
    h = _conv(h, *_weights(block.expand))
    expected = h + np.concatenate([skip, _conv(skip, *_weights(block.extra_channels))], axis=-1)
    assert block.reduce.filters == 16 // 4
    assert got.shape == expected.shape == ((2, 4, 4, 16) if downsample else (2, 8, 8, 16))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_discriminator_block_skip_concatenates_learned_channels():
    # Branch zeroed: output = concat([avgpool(x), conv1x1(avgpool(x))]), the input's
    # channels unchanged and 12 new ones from the spectrally normalised 1x1 conv.
    block = DeepDiscriminatorBlock(16, downsample=True)
    x = tf.random.stateless_normal((2, 8, 8, 4), (11, 12))
    block(x, training=True)
    block.expand.layer.kernel.assign(tf.zeros_like(block.expand.layer.kernel))
    block.expand.layer.bias.assign(tf.zeros_like(block.expand.layer.bias))
    got = block(x, training=False).numpy()
    pooled = _avg_pool(x.numpy().astype(np.float64))
    kernel = block.extra_channels.normalized_kernel().numpy().astype(np.float64)
    added = pooled @ kernel[0, 0] + block.extra_channels.layer.bias.numpy()
    assert kernel.shape == (1, 1, 4, 12)
    np.testing.assert_allclose(got[..., :4], pooled, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[..., 4:], added, rtol=1e-5, atol=1e-5)
    # Equal widths: no learned channels, the skip is the identity (pooled).
    same = DeepDiscriminatorBlock(4, downsample=False)
    same(x)
    assert same.extra_channels is None


def test_blocks_reject_channels_their_skip_cannot_carry():
    with pytest.raises(ValueError, match="filters=16.*received 8"):
        DeepGeneratorBlock(16)(tf.zeros((1, 4, 4, 8)), tf.zeros((1, 3)))
    with pytest.raises(ValueError, match="filters=8.*received 16"):
        DeepDiscriminatorBlock(8)(tf.zeros((1, 4, 4, 16)))
    with pytest.raises(ValueError, match="channel_ratio must be a positive int, received 0"):
        DeepDiscriminatorBlock(8, channel_ratio=0)


# --- models -------------------------------------------------------------------------------

def _reference_generator_parameters(ch, z_dim, shared_dim, num_classes, rgb_filters,
                                    projection_bias, attention_bias):
    """BigGAN-deep 128x128 generator, written from the layer list of DeepMind's released
    generator (TF-Hub `biggan-deep-128`, as converted in huggingface/pytorch-pretrained-BigGAN
    `config.py`: (upsample, in, out) multipliers) and BigGAN-PyTorch's `BigGANdeep.py`."""
    layers = [(16, 16), (16, 16), (16, 16), (16, 8), (8, 8), (8, 4), (4, 4), (4, 2), (2, 2), (2, 1)]
    condition = z_dim + shared_dim
    total = num_classes * shared_dim + condition * 16 * 16 * ch + 16 * 16 * ch
    for inputs, outputs in layers:
        inputs, outputs = inputs * ch, outputs * ch
        middle = inputs // 4
        norms = (inputs + 3 * middle) * 2  # γ and β projections
        total += norms * condition + (norms if projection_bias else 0)
        total += (inputs * middle + middle + 2 * (9 * middle * middle + middle)
                  + middle * outputs + outputs)
    attention = 2 * ch  # after the block that upsamples to 64x64
    total += 2 * attention * attention // 8 + 2 * attention * attention // 2 + 1
    if attention_bias:
        total += 2 * attention // 8 + attention // 2 + attention
    total += 2 * ch + 9 * ch * rgb_filters + rgb_filters  # unconditional BN γ, β; RGB conv
    return total


def _reference_discriminator_parameters(ch, num_classes, attention_bias):
    """BigGAN-deep 128x128 discriminator from BigGAN-PyTorch's `BigGANdeep.D_arch` (stem 3x3
    conv to ch, stages to 2, 4, 8, 16, 16·ch, two bottleneck blocks each, attention at 64x64)."""
    total = 9 * 3 * ch + ch
    width = ch
    for multiplier in (2, 4, 8, 16, 16):
        for inputs in (width, multiplier * ch):
            outputs = multiplier * ch
            middle = outputs // 4
            total += (inputs * middle + middle + 2 * (9 * middle * middle + middle)
                      + middle * outputs + outputs)
            if inputs < outputs:
                total += inputs * (outputs - inputs) + (outputs - inputs)
        width = multiplier * ch
    attention = 2 * ch
    total += 2 * attention * attention // 8 + 2 * attention * attention // 2 + 1
    if attention_bias:
        total += 2 * attention // 8 + attention // 2 + attention
    return total + 16 * ch + 1 + num_classes * 16 * ch


def test_reference_formulas_reproduce_published_counts():
    # 50,388,609: DeepMind's BigGAN-deep-128 generator ("50.4M parameters",
    # huggingface/pytorch-pretrained-BigGAN README; its RGB conv has 128 filters of which
    # the first 3 are kept, the γ/β projections and attention convs have no bias);
    # BigGAN-PyTorch's BigGANdeep.Generator(G_ch=128, dim_z=128, shared_dim=128) has the
    # same layers. 34,590,210: BigGAN-PyTorch's BigGANdeep.Discriminator(D_ch=128, 1000
    # classes). These are the 50.4M / 34.6M usually quoted for BigGAN-deep 128.
    paper = dict(ch=128, z_dim=128, shared_dim=128, num_classes=1000)
    assert _reference_generator_parameters(**paper, rgb_filters=128, projection_bias=False,
                                           attention_bias=False) == 50_388_609
    assert _reference_discriminator_parameters(128, 1000, attention_bias=False) == 34_590_210


# Three of the nine behind `slow`; every resolution and every norm-act stays in the default suite.
_SLOW = pytest.mark.slow


@pytest.mark.parametrize("resolution,norm_act", [
    (32, "bn_relu"), (32, "evonorm_b0"), (32, "evonorm_s0"),
    pytest.param(64, "bn_relu", marks=_SLOW), pytest.param(64, "evonorm_b0", marks=_SLOW),
    (64, "evonorm_s0"),
    (128, "bn_relu"), (128, "evonorm_b0"), pytest.param(128, "evonorm_s0", marks=_SLOW),
])
def test_generator_shapes_layout_and_size(resolution, norm_act):
    ch, z_dim, shared = 8, 20, 12  # z_dim not divisible by the block count: no chunks
    kwargs = {"groups": 2} if norm_act == "evonorm_s0" else {}
    G = Generator(resolution=resolution, ch=ch, z_dim=z_dim, shared_dim=shared, num_classes=10,
                  norm_act=norm_act, norm_act_kwargs=kwargs, architecture=DEEP)
    images = G((tf.random.normal((2, z_dim)), tf.constant([1, 7])), training=True)
    assert images.shape == (2, resolution, resolution, 3)
    assert np.all(np.isfinite(images.numpy())) and np.abs(images.numpy()).max() <= 1.0
    spec = architectures.DEEP_GENERATOR_SPECS[resolution]
    stages = len(spec.multipliers) - 1
    assert len(G.blocks) == G.num_blocks == 2 * stages
    for stage in range(stages):
        first, second = G.blocks[2 * stage], G.blocks[2 * stage + 1]
        assert not first.upsample and second.upsample
        assert first.filters == spec.multipliers[stage] * ch
        assert second.filters == spec.multipliers[stage + 1] * ch
    # Attention after the block that upsamples to 64x64 (none at 32).
    assert list(G.attention) == ([] if resolution == 32 else [f"block{2 * 4 - 1}"])
    # Every conditional norm sees the full z and the class embedding.
    norms = [layer for layer in G._flatten_layers() if isinstance(layer, ConditionalNormAct)]
    assert len(norms) == 4 * len(G.blocks)
    assert {norm.gain_projection.layer.kernel.shape[0] for norm in norms} == {z_dim + shared}
    if resolution == 128:
        assert _count(G) == _reference_generator_parameters(
            ch, z_dim, shared, 10, rgb_filters=3, projection_bias=False, attention_bias=False) + (
            0 if norm_act == "bn_relu" else _evonorm_extra_weights(norms, G))


def _evonorm_extra_weights(norms, G):
    """EvoNorm-B0/S0 carry a learned v per channel (in the conditional norms their γ, β are
    constants; the unconditional output norm's γ, β are in the reference count)."""
    inner = [norm.inner for norm in norms] + [G.output_norm]
    return sum(int(layer.v.shape[0]) for layer in inner)


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_discriminator_shapes_layout_and_size(resolution):
    ch = 8
    D = Discriminator(resolution=resolution, ch=ch, num_classes=10, architecture=DEEP)
    logits = D((tf.random.normal((2, resolution, resolution, 3)), tf.constant([0, 9])),
               training=True)
    assert logits.shape == (2,) and np.all(np.isfinite(logits.numpy()))
    spec = architectures.DEEP_DISCRIMINATOR_SPECS[resolution]
    assert D.stem.layer.filters == spec.multipliers[0] * ch
    assert len(D.blocks) == 2 * len(spec.downsample)
    assert [block.downsample for block in D.blocks] == [
        flag for down in spec.downsample for flag in (down, False)]
    assert [block.filters for block in D.blocks] == [
        m * ch for m in spec.multipliers[1:] for _ in range(2)]
    # Attention only where a stage outputs 64x64: after block1 at 128.
    assert list(D.attention) == (["block1"] if resolution == 128 else [])
    if resolution == 128:
        assert _count(D) == _reference_discriminator_parameters(ch, 10, attention_bias=False)


@pytest.mark.slow
def test_paper_configuration_parameter_counts():
    # BigGAN-deep 128 (ch 128, z 128, shared embedding 128, 1000 classes). Ours differs from
    # the published 50,388,609 / 34,590,210 (see the test above) only by a documented choice:
    # a 3-filter RGB conv (not 128 then slice); like the references, the γ/β projections and
    # the attention's four 1x1 convs have no bias.
    G = Generator(resolution=128, ch=128, z_dim=128, shared_dim=128, num_classes=1000,
                  architecture=DEEP)
    G((tf.zeros((1, 128)), tf.zeros((1,), tf.int32)))
    assert _count(G) == 50_388_609 - (9 * 128 * 128 + 128) + (9 * 128 * 3 + 3)
    assert _count(G) == 50_244_484
    D = Discriminator(resolution=128, ch=128, num_classes=1000, architecture=DEEP)
    D((tf.zeros((1, 32, 32, 3)), tf.zeros((1,), tf.int32)))  # sizes do not depend on the image
    assert _count(D) == 34_590_210


def test_conditioning_on_class_and_full_latent():
    G = Generator(resolution=32, ch=8, z_dim=16, shared_dim=8, norm_act="evonorm_s0",
                  norm_act_kwargs={"groups": 2}, architecture=DEEP)
    z = tf.repeat(tf.random.stateless_normal((1, 16), (13, 14)), 2, axis=0)
    different = G((z, tf.constant([3, 5])), training=False).numpy()
    assert np.abs(different[0] - different[1]).max() > 1e-4
    same = G((z, tf.constant([3, 3])), training=False).numpy()
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)
    # The gains of every conditional norm depend on the class: γ(c) for labels 3 and 5.
    condition = tf.concat([z, G.embedding(tf.constant([3, 5]))], axis=-1)
    norms = [layer for layer in G._flatten_layers() if isinstance(layer, ConditionalNormAct)]
    for norm in norms:
        gains = norm.gain_projection(condition).numpy()
        assert np.abs(gains[0] - gains[1]).max() > 1e-4
    # The last z coordinates reach the first block (z is not chunked).
    shifted = z.numpy().copy()
    shifted[1, -1] += 1.0
    outputs = G((tf.constant(shifted), tf.constant([3, 3])), training=False).numpy()
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-4
    D = Discriminator(resolution=32, ch=8, architecture=DEEP)
    x = tf.repeat(tf.random.stateless_normal((1, 32, 32, 3), (15, 16)), 2, axis=0)
    logits = D((x, tf.constant([3, 5])), training=False).numpy()
    assert abs(logits[0] - logits[1]) > 1e-6


def test_bad_architecture_and_resolution():
    with pytest.raises(ValueError, match="'biggan-deep'"):
        Generator(architecture="biggan-deep")
    with pytest.raises(ValueError, match="'deep'"):
        Discriminator(architecture="deep")
    with pytest.raises(ValueError, match="256"):
        Generator(resolution=256, architecture=DEEP)
    with pytest.raises(ValueError, match="48"):
        Discriminator(resolution=48, architecture=DEEP)
    # BigGAN keeps its chunk rule; BigGAN-deep does not chunk z.
    with pytest.raises(ValueError, match="z_dim=30"):
        Generator(resolution=32, z_dim=30)
    assert Generator(resolution=32, z_dim=30, architecture=DEEP).chunk == 30


def _train_step_changes_weights(norm_act, jit_compile):
    kwargs = dict(resolution=32, ch=8, z_dim=16, shared_dim=8, norm_act=norm_act,
                  architecture=DEEP)
    trainer = GANTrainer(Generator(**kwargs), Discriminator(resolution=32, ch=8, architecture=DEEP),
                         Generator(**kwargs), discriminator_steps=1)
    trainer.build((32, 32, 3))
    g_before = [w.numpy() for w in trainer.generator.trainable_weights]
    d_before = [w.numpy() for w in trainer.discriminator.trainable_weights]
    step = trainer.make_train_step(jit_compile=True) if jit_compile else trainer.train_step
    metrics = step(tf.random.uniform((2, 32, 32, 3), -1, 1), tf.constant([0, 1]))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert int(trainer.step) == 1
    # The bias of D's output gets (1/N)·Σ_real(−1) + (1/N)·Σ_fake(+1) = 0 from the hinge loss
    # while every output lies inside the margin, as at initialisation: it need not move.
    balanced = {id(w) for w in trainer.discriminator.linear.trainable_weights if "bias" in w.name}
    for before, model in ((g_before, trainer.generator), (d_before, trainer.discriminator)):
        changed = [not np.allclose(b, w.numpy()) or id(w) in balanced
                   for b, w in zip(before, model.trainable_weights)]
        assert all(changed), [w.name for c, w in zip(changed, model.trainable_weights) if not c]


def test_train_step_changes_every_weight():
    # Eager (no tf.function): every G and D weight gets a gradient and an Adam update.
    _train_step_changes_weights("bn_relu", jit_compile=False)


@pytest.mark.slow
def test_train_step_compiles_with_xla():
    # XLA compiling G and D (six bottleneck blocks each) took 394 s on a shared 2-core CPU.
    _train_step_changes_weights("evonorm_b0", jit_compile=True)
