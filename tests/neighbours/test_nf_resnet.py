"""Normalizer-free ResNets: Scaled WS convolution against NumPy float64, the NF block,
the backbone's Model Garden registration and a short training run on the digits.

References are written from arXiv:2101.08692, not from our code.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from scipy import integrate

from official.vision.modeling.backbones import factory as backbone_factory

import evonorm_tf.configs  # noqa: F401  (registers the backbone builders)
from evonorm_tf.configs import backbones as backbone_configs
from evonorm_tf.configs.nf_resnet import NFResNet as NFResNetConfig
from evonorm_tf.modeling import NF_RESNET_SPECS, NFResNet, build_nf_resnet
from evonorm_tf.modeling.backbones.nf_resnet import expected_block_variances
from evonorm_tf.modeling.layers import REFERENCE_ACTIVATION_GAINS, ScaledResidualAdd, ScaledWSConv2D

FUNCTIONS = {"relu": lambda z: np.maximum(z, 0.0), "silu": lambda z: z / (1.0 + np.exp(-np.clip(z, -50, 50)))}


def _exact_gain(activation):
    """1 / std(act(z)), z ~ N(0, 1), by adaptive quadrature (independent of the layer's rule)."""
    if activation == "linear":
        return 1.0
    function = FUNCTIONS[activation]

    def moment(power):
        integrand = lambda z: function(z) ** power * math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        return integrate.quad(integrand, -40.0, 0.0, epsabs=1e-14)[0] + integrate.quad(
            integrand, 0.0, 40.0, epsabs=1e-14)[0]

    return 1.0 / math.sqrt(moment(2) - moment(1) ** 2)


@pytest.mark.parametrize("activation", ["relu", "silu", "swish"])
def test_activation_gain_is_exact_inverse_std_of_activation(activation):
    exact = _exact_gain("silu" if activation == "swish" else activation)
    layer = ScaledWSConv2D(4, 1, activation_gain=activation)
    # One rule for every activation: the exact value (ReLU 1.7128585, SiLU 1.7871872).
    np.testing.assert_allclose(layer._fixed_gain, exact, rtol=1e-10)
    # The reference code's fitted constants (1.7139589, 1.7881293) are 0.05–0.06% higher:
    # a test at this tolerance tells the two rules apart.
    reference = REFERENCE_ACTIVATION_GAINS["silu" if activation == "swish" else activation]
    assert 4e-4 < reference / exact - 1.0 < 7e-4


def _reference_conv_same(x, kernel, bias):
    """NumPy float64 stride-1 'same' convolution of NHWC `x` with an HWIO kernel."""
    kh, kw = kernel.shape[:2]
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    height, width = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[3],))
    for i in range(kh):
        for j in range(kw):
            out += padded[:, i:i + height, j:j + width, :] @ kernel[i, j]
    return out + bias


@pytest.mark.parametrize("activation_gain", ["relu", "silu", 1.0])
def test_scaled_ws_conv_matches_numpy(activation_gain):
    rng = np.random.default_rng(0)
    layer = ScaledWSConv2D(5, 3, padding="same", activation_gain=activation_gain)
    layer.build((None, 6, 6, 3))
    kernel = rng.normal(0.3, 2.0, size=(3, 3, 3, 5))
    gain = rng.uniform(0.5, 1.5, size=5)
    bias = rng.normal(size=5)
    layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32), gain.astype(np.float32)])
    x = rng.normal(size=(2, 6, 6, 3))

    fixed = _exact_gain(activation_gain) if isinstance(activation_gain, str) else activation_gain
    fan_in = 3 * 3 * 3
    flat = kernel.reshape(fan_in, 5)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    standardized = gain * fixed * (kernel - mean) / np.sqrt(std**2 * fan_in + 1e-4)
    expected = _reference_conv_same(x, standardized, bias)
    np.testing.assert_allclose(layer(x.astype(np.float32)).numpy(), expected, rtol=1e-4, atol=1e-4)
    # Per output channel: zero mean and sum of squares (g·γ_act)².
    kernel_hat = layer.standardized_kernel().numpy().reshape(fan_in, 5)
    np.testing.assert_allclose(kernel_hat.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose((kernel_hat**2).sum(axis=0), (gain * fixed) ** 2, rtol=1e-3)


def test_scaled_ws_conv_gradient_reaches_raw_kernel_and_gain():
    layer = ScaledWSConv2D(3, 3, padding="same", activation_gain="relu")
    x = tf.random.normal((2, 5, 5, 2), seed=1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(x)))
    gradients = tape.gradient(loss, [layer.kernel, layer.gain])
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in gradients)


def test_expected_block_variances_follow_alpha_squared_and_reset():
    # ResNet-20: 3 stages of 3 blocks; input variance of each block.
    expected = [1.0, 1.04, 1.08, 1.12, 1.04, 1.08, 1.12, 1.04, 1.08]
    np.testing.assert_allclose(expected_block_variances(20, alpha=0.2), expected)


def test_default_skip_init_makes_non_transition_blocks_identities():
    model = build_nf_resnet(20, input_shape=(16, 16, 3))
    merge = model.get_layer("stage1_block2_add")
    probe = tf_keras.Model(model.inputs, [merge.input[1], merge.output])
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
    block_input, block_output = probe(x)
    np.testing.assert_array_equal(block_output.numpy(), block_input.numpy())
    assert float(merge.skip_gain.numpy()) == 0.0


def test_residual_merge_is_shortcut_plus_alpha_gain_branch():
    merge = ScaledResidualAdd(alpha=0.3, skip_gain_init=0.5)
    branch, shortcut = np.full((1, 2, 2, 1), 2.0, np.float32), np.ones((1, 2, 2, 1), np.float32)
    np.testing.assert_allclose(merge([branch, shortcut]).numpy(), 1.0 + 0.3 * 0.5 * 2.0)


def test_backbone_output_specs_and_config_round_trip():
    model = build_nf_resnet(20, input_shape=(16, 16, 1), width_multiplier=0.5)
    assert {key: tuple(shape) for key, shape in model.output_specs.items()} == {
        "0": (None, 16, 16, 8), "1": (None, 8, 8, 16), "2": (None, 4, 4, 32)}
    clone = NFResNet.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(clone(x)["2"].numpy(), model(x)["2"].numpy(), rtol=1e-6)
    # No normalization layer anywhere.
    assert not any("norm" in layer.__class__.__name__.lower() for layer in model.layers)


def test_bad_arguments_quote_the_value():
    with pytest.raises(ValueError, match="model_id=21"):
        build_nf_resnet(21, input_shape=(16, 16, 1))
    with pytest.raises(ValueError, match="activation='tanh'"):
        build_nf_resnet(20, input_shape=(16, 16, 1), activation="tanh")
    with pytest.raises(ValueError, match="alpha=0"):
        build_nf_resnet(20, input_shape=(16, 16, 1), alpha=0)
    with pytest.raises(ValueError, match="activation='gelu'"):
        ScaledWSConv2D(4, 3, activation_gain="gelu")


def test_model_garden_factory_builds_nf_resnet():
    backbone_config = backbone_configs.Backbone(type="nf_resnet", nf_resnet=NFResNetConfig(model_id=26))
    backbone_config.override({"nf_resnet": {"width_multiplier": 0.25, "activation": "silu"}})
    model = backbone_factory.build_backbone(
        input_specs=tf_keras.layers.InputSpec(shape=[None, 64, 64, 3]),
        backbone_config=backbone_config,
        norm_activation_config=None,
        l2_regularizer=tf_keras.regularizers.L2(1e-4),
    )
    assert isinstance(model, NFResNet)
    assert model.get_config()["activation"] == "silu"
    assert model.get_config()["stochastic_depth_drop_rate"] == 0.1  # the reference default
    assert model.get_config()["scaled_final_activation"] is True
    assert sorted(model.output_specs) == ["2", "3", "4", "5"]
    assert tuple(model.output_specs["5"]) == (None, 2, 2, 512)  # 0.25 · 512 · 4
    assert len(model.losses) > 0  # weight decay reaches the convolutions
    assert set(NF_RESNET_SPECS) >= {26, 50, 101}


def test_trains_on_digits():
    from evonorm_tf.data import digits

    split = digits.load_digits_split(image_size=8, train_subset=384)
    tf_keras.utils.set_random_seed(0)
    model = build_nf_resnet(20, input_shape=(8, 8, 1), num_classes=10, width_multiplier=0.5)
    # Adam: with SkipInit (zero gains) SGD leaves the loss nearly flat for the
    # first few hundred images; BN-ReLU does not have this slow start.
    model.compile(
        tf_keras.optimizers.Adam(1e-2),
        tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    images = (split.train_images - split.train_images.mean()) / split.train_images.std()
    first = model.evaluate(images, split.train_labels, verbose=0)
    model.fit(images, split.train_labels, batch_size=64, epochs=5, verbose=0)
    last = model.evaluate(images, split.train_labels, verbose=0)
    assert last < 0.5 * first, (first, last)


def test_blocks_divide_by_the_tracked_expected_std():
    model = build_nf_resnet(20, input_shape=(16, 16, 1), alpha=0.5)
    # Input variance of each block: 1, then +α² per block, 1 + α² after a transition.
    expected_variances = [1.0, 1.25, 1.5, 1.75, 1.25, 1.5, 1.75, 1.25, 1.5]
    names = [f"stage{stage}_block{block}" for stage in (1, 2, 3) for block in (1, 2, 3)]
    scales = [model.get_layer(f"{name}_inv_beta").scale for name in names]
    np.testing.assert_allclose(scales, 1.0 / np.sqrt(expected_variances), rtol=1e-12)


def _silu(x):
    return x / (1.0 + np.exp(-x))


def test_silu_block_applies_the_activation_before_dividing_by_beta():
    """act(h)/β, the reference code's order; act(h/β) differs for SiLU."""
    model = build_nf_resnet(20, input_shape=(8, 8, 1), activation="silu", alpha=0.5, skip_gain_init=1.0)
    merge = model.get_layer("stage1_block1_add")
    probe = tf_keras.Model(model.inputs, [merge.output, model.get_layer("stage1_block2_inv_beta").output])
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)
    block_input, activated = (t.numpy().astype(np.float64) for t in probe(x))
    beta = math.sqrt(1.0 + 0.5**2)
    np.testing.assert_allclose(activated, _silu(block_input) / beta, rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(_silu(block_input / beta) - _silu(block_input) / beta)) > 1e-2


@pytest.mark.parametrize("activation", ["relu", "silu"])
@pytest.mark.parametrize("scaled", [True, False])
def test_network_ends_with_the_gamma_scaled_activation(activation, scaled):
    model = build_nf_resnet(20, input_shape=(8, 8, 1), activation=activation, skip_gain_init=1.0,
                            scaled_final_activation=scaled)
    probe = tf_keras.Model(model.inputs, model.get_layer("stage3_block3_add").output)
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 1)).astype(np.float32)
    gain = _exact_gain(activation) if scaled else 1.0
    expected = gain * FUNCTIONS[activation](probe(x).numpy().astype(np.float64))
    np.testing.assert_allclose(model(x)["2"].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_stochastic_depth_drops_whole_branches_without_rescaling():
    merge = ScaledResidualAdd(alpha=0.5, skip_gain_init=1.0, drop_rate=0.3)
    branch = np.ones((4000, 2, 2, 3), np.float32)
    shortcut = np.zeros_like(branch)
    tf.random.set_seed(0)
    trained = merge([branch, shortcut], training=True).numpy()
    per_example = trained.reshape(len(trained), -1)
    # Each example keeps (0.5) or drops (0) its whole branch; kept ones are not divided by 0.7.
    assert set(np.unique(per_example)) == {0.0, 0.5}
    assert np.all(per_example.min(axis=1) == per_example.max(axis=1))
    assert abs(np.mean(per_example[:, 0] > 0) - 0.7) < 0.03
    np.testing.assert_array_equal(merge([branch, shortcut], training=False).numpy(), 0.5 * branch)
    with pytest.raises(ValueError, match="drop_rate=1.0"):
        ScaledResidualAdd(drop_rate=1.0)


def test_stochastic_depth_drop_rate_grows_linearly_with_block_index():
    model = build_nf_resnet(20, input_shape=(8, 8, 1), stochastic_depth_drop_rate=0.2)
    names = [f"stage{stage}_block{block}_add" for stage in (1, 2, 3) for block in (1, 2, 3)]
    np.testing.assert_allclose([model.get_layer(name).drop_rate for name in names], 0.2 * np.arange(9) / 9)
    with pytest.raises(ValueError, match="stochastic_depth_drop_rate=1.5"):
        build_nf_resnet(20, input_shape=(8, 8, 1), stochastic_depth_drop_rate=1.5)


def test_classifier_head_init_follows_the_reference():
    tf_keras.utils.set_random_seed(0)
    model = build_nf_resnet(20, input_shape=(8, 8, 1), num_classes=10, width_multiplier=4.0)
    kernel, bias = model.get_layer("logits").get_weights()
    # N(0, 0.01) on a 256 × 10 kernel, zero bias (the reference NF-ResNet's head).
    assert 0.009 < kernel.std() < 0.011 and abs(kernel.mean()) < 0.002
    np.testing.assert_array_equal(bias, 0.0)
    zero = build_nf_resnet(20, input_shape=(8, 8, 1), num_classes=10, head_initializer="zeros")
    np.testing.assert_array_equal(zero.get_layer("logits").get_weights()[0], 0.0)
    with pytest.raises(ValueError, match="head_initializer='uniform'"):
        build_nf_resnet(20, input_shape=(8, 8, 1), num_classes=10, head_initializer="uniform")
