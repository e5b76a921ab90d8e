"""The 2015 FID Inception layout, its weight conversion and its feature-network plumbing (random weights)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from evonorm_tf.gan import evaluation, fid_inception


@pytest.fixture(scope="module")
def model():
    tf_keras.utils.set_random_seed(0)
    return fid_inception.fid_inception_model()


def _pool_feeding(model, block):
    """The pooling layer whose output feeds `block`'s pool-branch convolution."""
    conv = model.get_layer(f"{block}.branch_pool.conv")
    return conv.input.node.layer if hasattr(conv.input, "node") else \
        conv._inbound_nodes[0].inbound_layers


def test_pooling_layout_of_the_2015_graph(model):
    # The last block max-pools in its pool branch (Keras's InceptionV3 average-pools there);
    # the one before average-pools, as do the 35x35 and 17x17 blocks.
    assert isinstance(_pool_feeding(model, "Mixed_7c"), tf_keras.layers.MaxPooling2D)
    for block in ("Mixed_7b", "Mixed_6e", "Mixed_5b"):
        assert isinstance(_pool_feeding(model, block), tf_keras.layers.AveragePooling2D)
    assert [tuple(t.shape[1:]) for t in model.outputs] == [(2048,), (1008,)]


@pytest.mark.slow
def test_same_layers_as_keras_inception_v3_plus_batch_norm_scales(model):
    # Keras's InceptionV3 has the same convolutions (no bias) and BNs without γ, and
    # average-pools in its last block's pool branch (an 8x8 map).
    keras = tf_keras.applications.InceptionV3(weights=None, classes=1008)
    last_pool = [layer for layer in keras.layers
                 if isinstance(layer, tf_keras.layers.AveragePooling2D)][-1]
    assert last_pool.output.shape[1:3] == (8, 8)
    scales = sum(int(layer.gamma.shape[0]) for layer in model.layers
                 if isinstance(layer, tf_keras.layers.BatchNormalization))
    def trainable(m):
        return sum(int(np.prod(w.shape)) for w in m.trainable_weights)

    assert trainable(model) == trainable(keras) + scales
    # torchvision's inception_v3: 27,161,264 parameters with the auxiliary head (3,326,696) and
    # 1000 classes; pytorch-fid's network has no auxiliary head and 1008 classes (+8·2049).
    assert trainable(model) == 27_161_264 - 3_326_696 + 8 * 2049


def _state_dict(model, rng):
    """Random weights under torchvision names and layouts (conv OIHW, fc [out, in])."""
    state = {}
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            state[f"{layer.name}.weight"] = rng.normal(size=(cout, cin, kh, kw)).astype(np.float32)
        elif isinstance(layer, tf_keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            for suffix in ("weight", "bias", "running_mean"):
                state[f"{layer.name}.{suffix}"] = rng.normal(size=n).astype(np.float32)
            state[f"{layer.name}.running_var"] = rng.uniform(0.5, 2, size=n).astype(np.float32)
            state[f"{layer.name}.num_batches_tracked"] = np.array(0)
    state["fc.weight"] = rng.normal(size=(1008, 2048)).astype(np.float32)
    state["fc.bias"] = rng.normal(size=1008).astype(np.float32)
    return state


def test_conversion_maps_every_tensor_by_name_and_layout(model):
    state = _state_dict(model, np.random.default_rng(1))
    fid_inception.convert_state_dict(state, model)
    conv = model.get_layer("Mixed_6b.branch7x7_2.conv")  # a (1, 7) kernel
    np.testing.assert_array_equal(conv.kernel.numpy(),
                                  state["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0))
    assert conv.kernel.shape == (1, 7, 128, 128)
    bn = model.get_layer("Mixed_7c.branch_pool.bn")
    np.testing.assert_array_equal(bn.moving_variance.numpy(), state["Mixed_7c.branch_pool.bn.running_var"])
    np.testing.assert_array_equal(model.get_layer("fc").kernel.numpy(), state["fc.weight"].T)
    with pytest.raises(ValueError, match="no 'fc.bias'"):
        fid_inception.convert_state_dict({k: v for k, v in state.items() if k != "fc.bias"}, model)
    with pytest.raises(ValueError, match="AuxLogits.fc.weight"):
        fid_inception.convert_state_dict({**state, "AuxLogits.fc.weight": np.zeros(1)}, model)
    with pytest.raises(ValueError, match="shape"):
        fid_inception.convert_state_dict({**state, "fc.bias": np.zeros(1000)}, model)


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        fid_inception.fid_inception_network(str(tmp_path / "missing.weights.h5"))


@pytest.mark.slow
def test_feature_network_plumbing(model, tmp_path):
    path = str(tmp_path / "fid_inception.weights.h5")
    model.save_weights(path)
    network = fid_inception.fid_inception_network(path)
    assert evaluation.metric_names(network)["fid"] == "fid_inception_2015"
    images = tf.random.uniform((2, 32, 32, 3), -1, 1)
    pool, logits = network(images)
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    expected_pool, expected_logits = model(tf.image.resize(images, (299, 299)), training=False)
    np.testing.assert_allclose(pool, expected_pool, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-3)
    # pool_3 is the mean over the 8x8 map of the last block's output.
    block = tf_keras.Model(model.input, model.get_layer("Mixed_7c").output)(
        tf.image.resize(images, (299, 299)))
    np.testing.assert_allclose(pool, tf.reduce_mean(block, axis=[1, 2]), rtol=1e-4, atol=1e-5)
    grey = network(tf.random.uniform((1, 32, 32, 1), -1, 1))[0]
    assert grey.shape == (1, 2048)
