"""Shadow Batch Normalization (MixPath) and the multi-path block, against NumPy float64.

The reference below is written from the definition (MixPath, arXiv:2001.05887): BN
number m normalizes the sum of m active paths; only its moving statistics move.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import keras

from evonorm_tf import shadow_batch_norm
from evonorm_tf.modeling.layers.multipath import MultiPathBlock
from evonorm_tf.tf_keras import shadow_batch_norm as tf_keras_shadow

NUM_PATHS = 3
CHANNELS = 4
MOMENTUM = 0.8
EPSILON = 1e-3

FRONT_ENDS = {
    "keras3": shadow_batch_norm.ShadowBatchNormalization,
    "tf_keras": tf_keras_shadow.ShadowBatchNormalization,
}


def reference_batch_norm(x, mean, variance, gamma, beta, epsilon):
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


class ReferenceShadowBN:
    """NumPy float64 Shadow BN: k rows of (γ, β, moving mean, moving variance)."""

    def __init__(self, gamma, beta, momentum, epsilon):
        self.gamma, self.beta = gamma.astype(np.float64), beta.astype(np.float64)
        self.moving_mean = np.zeros_like(self.gamma)
        self.moving_variance = np.ones_like(self.gamma)
        self.momentum, self.epsilon = momentum, epsilon

    def __call__(self, x, m, training):
        row = m - 1
        if training:
            mean, variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moving[row] = self.momentum * moving[row] + (1 - self.momentum) * batch
        else:
            mean, variance = self.moving_mean[row], self.moving_variance[row]
        return reference_batch_norm(x, mean, variance, self.gamma[row], self.beta[row], self.epsilon)


def _layer_with_random_weights(front_end, seed=0):
    layer = FRONT_ENDS[front_end](NUM_PATHS, momentum=MOMENTUM, epsilon=EPSILON)
    layer.build((None, 5, 5, CHANNELS))
    rng = np.random.default_rng(seed)
    layer.gamma.assign(rng.uniform(0.5, 1.5, (NUM_PATHS, CHANNELS)).astype(np.float32))
    layer.beta.assign(rng.normal(size=(NUM_PATHS, CHANNELS)).astype(np.float32))
    reference = ReferenceShadowBN(layer.gamma.numpy(), layer.beta.numpy(), MOMENTUM, EPSILON)
    return layer, reference


def _batches(seed=1):
    rng = np.random.default_rng(seed)
    # m paths summed: the scale grows with m, as in a supernet.
    return [(m, (np.sqrt(m) * rng.normal(size=(6, 5, 5, CHANNELS)) + m).astype(np.float32))
            for m in (2, 1, 3, 2)]


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
@pytest.mark.parametrize("mode", ["eager", "function", "jit"])
def test_matches_reference_and_updates_only_bn_m(front_end, mode):
    layer, reference = _layer_with_random_weights(front_end)

    def step(x, m, training):
        return layer(x, m, training=training)

    if mode != "eager":
        # m is a tensor argument: one trace serves every number of paths.
        step = tf.function(step, jit_compile=(mode == "jit"), reduce_retracing=True)
    for m, x in _batches():
        before_mean = layer.moving_mean.numpy().copy()
        before_variance = layer.moving_variance.numpy().copy()
        outputs = step(tf.constant(x), tf.constant(m), True)
        expected = reference(x.astype(np.float64), m, training=True)
        np.testing.assert_allclose(outputs.numpy(), expected, rtol=1e-4, atol=1e-4)
        others = [row for row in range(NUM_PATHS) if row != m - 1]
        # The other BNs' moving statistics are bit-identical; BN number m moved.
        np.testing.assert_array_equal(layer.moving_mean.numpy()[others], before_mean[others])
        np.testing.assert_array_equal(layer.moving_variance.numpy()[others], before_variance[others])
        assert not np.allclose(layer.moving_mean.numpy()[m - 1], before_mean[m - 1])
        np.testing.assert_allclose(layer.moving_mean.numpy(), reference.moving_mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), reference.moving_variance, rtol=1e-5, atol=1e-5)
    for m, x in _batches(seed=2)[:3]:
        frozen = layer.moving_mean.numpy().copy()
        outputs = step(tf.constant(x), tf.constant(m), False)
        expected = reference(x.astype(np.float64), m, training=False)
        np.testing.assert_allclose(outputs.numpy(), expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(layer.moving_mean.numpy(), frozen)
    if mode != "eager":
        # One trace per training flag, none per number of paths.
        assert step.experimental_get_tracing_count() == 2


def test_channels_first_matches_channels_last():
    layer_last, _ = _layer_with_random_weights("tf_keras")
    layer_first = tf_keras_shadow.ShadowBatchNormalization(
        NUM_PATHS, momentum=MOMENTUM, epsilon=EPSILON, data_format="channels_first")
    layer_first.build((None, CHANNELS, 5, 5))
    layer_first.set_weights(layer_last.get_weights())
    m, x = _batches()[0]
    expected = layer_last(x, m, training=True).numpy()
    outputs = layer_first(np.moveaxis(x, -1, 1), m, training=True).numpy()
    np.testing.assert_allclose(np.moveaxis(outputs, 1, -1), expected, rtol=1e-5, atol=1e-5)


def test_bad_arguments_quote_the_value():
    with pytest.raises(ValueError, match="num_paths=0"):
        shadow_batch_norm.ShadowBatchNormalization(0)
    with pytest.raises(TypeError, match="num_paths=2.5"):
        tf_keras_shadow.ShadowBatchNormalization(2.5)
    layer, _ = _layer_with_random_weights("keras3")
    with pytest.raises(ValueError, match="active_paths=4"):
        layer(np.zeros((2, 5, 5, CHANNELS), np.float32), active_paths=4, training=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="active_paths must be >= 1"):
        layer(np.zeros((2, 5, 5, CHANNELS), np.float32), active_paths=tf.Variable(0), training=True)


def test_keras3_save_and_load(tmp_path):
    layer, _ = _layer_with_random_weights("keras3")
    m, x = _batches()[0]
    layer(x, active_paths=m, training=True)
    inputs = keras.Input((5, 5, CHANNELS))
    model = keras.Model(inputs, layer(inputs, active_paths=2))
    path = str(tmp_path / "shadow.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    restored_layer = restored.layers[-1]
    assert isinstance(restored_layer, shadow_batch_norm.ShadowBatchNormalization)
    assert restored_layer.get_config() == layer.get_config()
    np.testing.assert_array_equal(restored_layer.moving_mean.numpy(), layer.moving_mean.numpy())
    np.testing.assert_allclose(restored(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_tf_keras_save_and_load(tmp_path):
    layer, _ = _layer_with_random_weights("tf_keras")
    m, x = _batches()[0]
    layer(x, m, training=True)
    clone = tf_keras_shadow.ShadowBatchNormalization.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    inputs = tf_keras.Input((5, 5, CHANNELS))
    block = MultiPathBlock(CHANNELS, kernel_sizes=(1, 3), name="mixed")
    outputs = block(inputs, active_paths_mask=tf.constant([1.0, 1.0]))
    model = tf_keras.Model(inputs, outputs)
    block(x, tf.constant([1.0, 1.0]), training=True)  # moves BN number 2
    path = str(tmp_path / "multipath.keras")
    model.save(path)
    restored = tf_keras.models.load_model(path)
    restored_block = restored.get_layer("mixed")
    assert restored_block.get_config() == block.get_config()
    np.testing.assert_array_equal(
        restored_block.shadow_norm.moving_variance.numpy(), block.shadow_norm.moving_variance.numpy())
    np.testing.assert_allclose(restored(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_multipath_block_sums_active_paths_and_uses_bn_m():
    tf_keras.utils.set_random_seed(3)  # the path kernels: one fixed draw
    rng = np.random.default_rng(3)
    block = MultiPathBlock(CHANNELS, kernel_sizes=(1, 1, 1), activation="relu", momentum=MOMENTUM,
                           epsilon=EPSILON)
    x = rng.normal(size=(4, 5, 5, 3)).astype(np.float32)
    mask = np.array([1.0, 0.0, 1.0], np.float32)
    step = tf.function(lambda x, mask: block(x, mask, training=True), jit_compile=True)
    outputs = step(tf.constant(x), tf.constant(mask)).numpy()
    kernels = [path.kernel.numpy()[0, 0].astype(np.float64) for path in block.paths]
    summed = sum(weight * (x.astype(np.float64) @ kernel) for weight, kernel in zip(mask, kernels))
    reference = ReferenceShadowBN(block.shadow_norm.gamma.numpy(), block.shadow_norm.beta.numpy(),
                                  MOMENTUM, EPSILON)
    expected = np.maximum(reference(summed, 2, training=True), 0.0)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(block.shadow_norm.moving_mean.numpy(), reference.moving_mean, atol=1e-5)
    assert np.all(block.shadow_norm.moving_mean.numpy()[[0, 2]] == 0.0)
