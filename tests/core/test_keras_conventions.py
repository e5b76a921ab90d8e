"""Keras conventions: `axis`, `moving_variance_initializer`, frozen layers in inference mode."""

import numpy as np
import pytest
import tensorflow as tf

import evonorm_tf
import evonorm_tf.tf_keras
from layer_cases import BATCH_DEPENDENT, FRONT_ENDS, NAMES

B_SERIES = ("evonorm_b0", "evonorm_b1", "evonorm_b2")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_axis_maps_to_data_format(front_end, name):
    module = FRONT_ENDS[front_end]
    kwargs = {"groups": 2} if "groups" in evonorm_tf.registry.accepted_arguments(name, "keras") else {}
    assert module.get_norm_act(name, axis=-1, **kwargs).data_format == "channels_last"
    assert module.get_norm_act(name, axis=1, **kwargs).data_format == "channels_first"
    assert module.get_norm_act(name, axis=[1], **kwargs).data_format == "channels_first"
    layer = module.get_norm_act(name, axis=3, **kwargs)
    assert layer(tf.ones([2, 3, 3, 4])).shape == (2, 3, 3, 4)
    with pytest.raises(ValueError, match=r"axis=2 is neither the first \(1\) nor the last \(3\)"):
        module.get_norm_act(name, axis=2, **kwargs)(tf.ones([2, 3, 3, 4]))
    with pytest.raises(ValueError, match="axis=1 means data_format='channels_first'"):
        module.get_norm_act(name, axis=1, data_format="channels_last", **kwargs)
    with pytest.raises(ValueError, match="received axis=0"):
        module.get_norm_act(name, axis=0, **kwargs)


@pytest.mark.parametrize("name", B_SERIES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_moving_variance_initializer(front_end, name):
    layer = FRONT_ENDS[front_end].get_norm_act(name, moving_variance_initializer="zeros")
    layer(tf.ones([2, 3, 3, 8]))
    np.testing.assert_array_equal(layer.moving_variance.numpy(), np.zeros(8))
    assert type(layer).from_config(layer.get_config()).get_config()["moving_variance_initializer"] == (
        layer.get_config()["moving_variance_initializer"]
    )


@pytest.mark.parametrize("name", BATCH_DEPENDENT)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_frozen_layer_runs_in_inference_mode(front_end, name):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=[4, 5, 5, 8]) * 3.0 + 1.0).astype(np.float32)
    layer = FRONT_ENDS[front_end].get_norm_act(name)
    layer(x, training=True)  # builds and moves the statistics away from their initial values
    moving = {w.name: w.numpy().copy() for w in layer.weights if "moving" in w.name}
    inference = layer(x, training=False).numpy()
    layer.trainable = False
    frozen = layer(x, training=True).numpy()
    np.testing.assert_allclose(frozen, inference, rtol=1e-6, atol=1e-6)
    for w in layer.weights:
        if "moving" in w.name:
            np.testing.assert_array_equal(w.numpy(), moving[w.name])
    layer.trainable = True
    assert not np.allclose(layer(x, training=True).numpy(), inference, atol=1e-3)


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_frozen_layer_in_fit_keeps_its_moving_statistics(front_end):
    module = FRONT_ENDS[front_end]
    keras_api = __import__("keras") if front_end == "keras3" else __import__("tf_keras")
    norm = module.get_norm_act("evonorm_b0")
    model = keras_api.Sequential([keras_api.Input((4, 4, 8)), norm,
                                  keras_api.layers.GlobalAveragePooling2D(), keras_api.layers.Dense(2)])
    norm.trainable = False
    model.compile("sgd", "mse")
    before = norm.moving_variance.numpy().copy()
    model.fit(np.random.rand(8, 4, 4, 8) * 5, np.zeros((8, 2)), epochs=1, verbose=0)
    np.testing.assert_array_equal(norm.moving_variance.numpy(), before)


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_frozen_shadow_batch_norm_runs_in_inference_mode(front_end):
    module = FRONT_ENDS[front_end]
    layer = module.ShadowBatchNormalization(num_paths=3)
    x = np.random.default_rng(1).normal(size=[4, 3, 3, 6]).astype(np.float32) * 2 + 1
    layer(x, active_paths=2, training=True)
    moving = layer.moving_variance.numpy().copy()
    inference = layer(x, active_paths=2, training=False).numpy()
    layer.trainable = False
    np.testing.assert_allclose(layer(x, active_paths=2, training=True).numpy(), inference, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(layer.moving_variance.numpy(), moving)
