"""ConditionalNormAct against a NumPy float64 reference (the family's formula with per-sample γ, β)."""

import numpy as np
import pytest
import tensorflow as tf

import reference
from evonorm_tf.gan import conditional_norm


def _weights_of(layer):
    """The inner layer's non-affine weights and the predicted per-sample γ, β."""
    return {w.name.split("/")[-1].split(":")[0]: w.numpy().astype(np.float64)
            for w in layer.inner.weights}


@pytest.mark.parametrize("name", reference.ALL_NAMES)
def test_matches_numpy_reference(name):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 4, 8)).astype(np.float32)
    c = rng.normal(size=(3, 5)).astype(np.float32)
    kwargs = {"groups": 4} if name in reference.S_SERIES + reference.GROUP_NORMS else {}
    layer = conditional_norm.ConditionalNormAct(name, spectral_norm=False, projection_bias=True,
                                                **kwargs)
    layer.build(x.shape)
    if name == "frn_tlu":
        layer.tau.assign(rng.normal(size=8).astype(np.float32) * 0.3)
    if name in ("evonorm_b0", "evonorm_s0"):
        layer(x, c)  # builds the inner layer
        layer.inner.v.assign(rng.uniform(0.5, 1.5, size=8).astype(np.float32))
    y = layer(x, c, training=True).numpy()

    c64 = c.astype(np.float64)
    w_gain, b_gain = [w.numpy().astype(np.float64) for w in layer.gain_projection.weights]
    w_bias, b_bias = [w.numpy().astype(np.float64) for w in layer.bias_projection.weights]
    gamma = (1.0 + c64 @ w_gain + b_gain)[:, None, None, :]
    beta = (c64 @ w_bias + b_bias)[:, None, None, :]
    weights = {"gamma": gamma, "beta": beta}
    if name in ("evonorm_b0", "evonorm_s0"):
        weights["v"] = layer.inner.v.numpy().astype(np.float64)
    if name == "frn_tlu":
        weights["tau"] = layer.tau.numpy().astype(np.float64)
    expected = reference.norm_act(name, x.astype(np.float64), weights, training=True,
                                  groups=kwargs.get("groups"))
    np.testing.assert_allclose(y, expected, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("name", ["bn_relu", "evonorm_b0", "evonorm_s0", "frn_tlu"])
def test_inner_affine_is_constant_and_projections_train(name):
    layer = conditional_norm.ConditionalNormAct(name, groups=4) if name == "evonorm_s0" \
        else conditional_norm.ConditionalNormAct(name)
    x = tf.random.normal((2, 4, 4, 8))
    c = tf.random.normal((2, 6))
    layer(x, c, training=True)
    trainable = {w.name.split("/")[-1].split(":")[0] for w in layer.trainable_weights}
    assert "gamma" not in trainable and "beta" not in trainable
    # The projections are kernels only (compare_gan, BigGAN-PyTorch): no bias weights.
    assert "kernel" in trainable and "bias" not in trainable
    if name in ("evonorm_b0", "evonorm_s0"):
        assert "v" in trainable


def test_condition_changes_output():
    layer = conditional_norm.ConditionalNormAct("evonorm_b0")
    x = tf.random.normal((2, 4, 4, 8))
    x = tf.concat([x[:1], x[:1]], axis=0)  # two identical samples
    c = tf.random.normal((2, 6))
    y = layer(x, c, training=False).numpy()
    assert np.abs(y[0] - y[1]).max() > 1e-3
    same = layer(x, tf.concat([c[:1], c[:1]], 0), training=False).numpy()
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="evonorm_x9"):
        conditional_norm.ConditionalNormAct("evonorm_x9")
    with pytest.raises(ValueError, match="gamma_initializer"):
        conditional_norm.ConditionalNormAct("evonorm_s0", gamma_initializer="zeros")
    with pytest.raises(TypeError, match="3"):
        conditional_norm.ConditionalNormAct(3)


def test_config_round_trip():
    layer = conditional_norm.ConditionalNormAct("evonorm_s0", groups=4, spectral_norm=False)
    clone = conditional_norm.ConditionalNormAct.from_config(layer.get_config())
    assert clone.norm_act == "evonorm_s0" and clone.inner.groups == 4 and not clone.spectral_norm
