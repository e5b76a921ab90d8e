"""Structural properties of the norm-act layers.

- S-series, GN and FRN: a sample's output does not depend on the rest of the batch.
- B-series and BN in inference: same; in training they do (the test can tell).
- channels_first gives the transposed channels_last result (outputs and moving variance).
- A tf_keras model (Sequential / functional, with Conv2D) tracks every weight of the
  tf_keras layers and `tf.train.Checkpoint` restores their exact values after training.
- A layer traced with unknown batch and spatial sizes matches its eager results.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import evonorm_tf.tf_keras
import reference
from layer_cases import (
    FRONT_ENDS,
    GROUPED,
    NAMES,
    built_layer,
    call,
    case_rng,
    from_format,
    groups_for,
    make_layer,
    random_input,
    random_shape,
    to_format,
    weight_name,
)

BATCH_FREE = reference.S_SERIES + reference.GROUP_NORMS + ("frn_tlu",)
DATA_FORMATS = ("channels_last", "channels_first")


def _per_sample_outputs_agree(layer, x, data_format, training):
    """Output of each sample in the batch vs alone vs with other companions."""
    rng = case_rng("companions", x.shape)
    together = from_format(call(layer, to_format(x, data_format), training).numpy(), data_format)
    differences = []
    for index in range(x.shape[0]):
        alone = call(layer, to_format(x[index:index + 1], data_format), training).numpy()
        companions = random_input(rng, [2] + list(x.shape[1:])) * 3.0
        mixed = np.concatenate([companions[:1], x[index:index + 1], companions[1:]])
        with_others = call(layer, to_format(mixed, data_format), training).numpy()[1:2]
        for other in (alone, with_others):
            other = from_format(other, data_format)
            differences.append(np.max(np.abs(together[index:index + 1] - other)))
    return max(differences)


@pytest.mark.parametrize("training", (True, False), ids=("training", "inference"))
@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("name", BATCH_FREE)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_batch_independent_layers(front_end, name, data_format, training):
    rng = case_rng("batch-free", name, data_format)
    shape = random_shape(rng, int(rng.integers(3, 6)))
    x = random_input(rng, shape)
    layer, _ = built_layer(front_end, name, x, rng, data_format=data_format,
                           groups=groups_for(name, shape[-1], rng))
    assert _per_sample_outputs_agree(layer, x, data_format, training) <= 1e-6


@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("name", reference.B_SERIES + reference.BATCH_NORMS)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_batch_series_inference_is_batch_independent(front_end, name, data_format):
    rng = case_rng("batch-inference", name, data_format)
    shape = random_shape(rng, int(rng.integers(3, 6)))
    x = random_input(rng, shape)
    layer, _ = built_layer(front_end, name, x, rng, data_format=data_format)
    assert _per_sample_outputs_agree(layer, x, data_format, training=False) <= 1e-6
    # In training the batch statistics do couple the samples.
    assert _per_sample_outputs_agree(layer, x, data_format, training=True) > 1e-3


@pytest.mark.parametrize("rank", (3, 4, 5))
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_channels_first_is_transposed_channels_last(front_end, name, rank):
    rng = case_rng("layouts", name, rank)
    shape = random_shape(rng, rank)
    x = random_input(rng, shape)
    groups = groups_for(name, shape[-1], rng)
    last, weights = built_layer(front_end, name, x, rng, data_format="channels_last", groups=groups)
    first = make_layer(front_end, name, groups=groups, data_format="channels_first")
    first.build(tuple(to_format(x, "channels_first").shape))
    for target in first.weights:
        target.assign(weights[weight_name(target)].astype(np.float32))
    for training in (False, True):
        y_last = call(last, x, training).numpy()
        y_first = call(first, to_format(x, "channels_first"), training).numpy()
        np.testing.assert_allclose(reference.to_channels_last(y_first), y_last,
                                   rtol=1e-6, atol=1e-6)
    for a, b in zip(last.weights, first.weights):  # moving statistics after the training call
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


# -- tf_keras model integration --------------------------------------------------------

# name → (trainable weight names, non-trainable weight names)
EXPECTED_WEIGHTS = {
    "bn_relu": ({"gamma", "beta"}, {"moving_mean", "moving_variance"}),
    "bn_silu": ({"gamma", "beta"}, {"moving_mean", "moving_variance"}),
    "gn_relu": ({"gamma", "beta"}, set()),
    "gn_silu": ({"gamma", "beta"}, set()),
    "frn_tlu": ({"gamma", "beta", "tau"}, set()),
    "evonorm_b0": ({"gamma", "beta", "v"}, {"moving_variance"}),
    "evonorm_b1": ({"gamma", "beta"}, {"moving_variance"}),
    "evonorm_b2": ({"gamma", "beta"}, {"moving_variance"}),
    "evonorm_s0": ({"gamma", "beta", "v"}, set()),
    "evonorm_s1": ({"gamma", "beta"}, set()),
    "evonorm_s2": ({"gamma", "beta"}, set()),
}
CONV_CHANNELS = 8


def _sequential_model(name):
    kwargs = {"groups": 4} if name in GROUPED else {}
    return tf_keras.Sequential([
        tf_keras.Input((6, 6, 3)),
        tf_keras.layers.Conv2D(CONV_CHANNELS, 3, padding="same"),
        evonorm_tf.tf_keras.get_norm_act(name, **kwargs),
        tf_keras.layers.GlobalAveragePooling2D(),
        tf_keras.layers.Dense(2),
    ])


def _train(model, steps, seed):
    rng = np.random.default_rng(seed)
    optimizer = tf_keras.optimizers.SGD(0.1)
    for _ in range(steps):
        x = tf.constant(rng.normal(1.0, 2.0, size=(4, 6, 6, 3)).astype(np.float32))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - 1.0))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_weights),
                                      model.trainable_weights))


def _norm_weight_names(weights):
    return {weight_name(w) for w in weights} - {"kernel", "bias"}


def test_expected_weights_cover_every_name():
    assert set(EXPECTED_WEIGHTS) == set(NAMES) == set(evonorm_tf.tf_keras.NORM_ACT_NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_tf_keras_model_tracks_and_checkpoints_weights(name, tmp_path):
    trainable, non_trainable = EXPECTED_WEIGHTS[name]
    model = _sequential_model(name)
    norm = model.layers[1]
    assert isinstance(norm, tf_keras.layers.Layer)
    # Conv2D and Dense own 2 weights each.
    assert len(model.weights) == 4 + len(trainable) + len(non_trainable)
    assert len(model.trainable_weights) == 4 + len(trainable)
    assert len(model.non_trainable_weights) == len(non_trainable)
    assert _norm_weight_names(model.trainable_weights) == trainable
    assert _norm_weight_names(model.non_trainable_weights) == non_trainable
    assert all(w.shape == (CONV_CHANNELS,) for w in norm.weights)

    initial = {weight_name(w): w.numpy().copy() for w in norm.weights}
    _train(model, steps=3, seed=0)
    trained = [w.numpy().copy() for w in model.weights]
    for w in norm.weights:  # training moved every norm weight, moving statistics included
        assert not np.array_equal(w.numpy(), initial[weight_name(w)]), weight_name(w)

    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    restored = _sequential_model(name)
    for before, after in zip(restored.layers[1].weights, norm.weights):
        assert not np.array_equal(before.numpy(), after.numpy())
    tf.train.Checkpoint(model=restored).restore(path).assert_existing_objects_matched()
    for original, copy in zip(trained, restored.weights):
        np.testing.assert_array_equal(copy.numpy(), original)
    # The restored model computes what the trained one does.
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 6, 6, 3)).astype(np.float32))
    np.testing.assert_array_equal(restored(x, training=False).numpy(),
                                  model(x, training=False).numpy())


def test_tf_keras_functional_model_tracks_every_norm_layer():
    """All eleven layers in one functional model: every weight tracked exactly once."""
    inputs = tf_keras.Input((5, 5, CONV_CHANNELS))
    branches = []
    for name in NAMES:
        kwargs = {"groups": 2} if name in GROUPED else {}
        features = tf_keras.layers.Conv2D(CONV_CHANNELS, 1)(inputs)
        branches.append(evonorm_tf.tf_keras.get_norm_act(name, **kwargs)(features))
    model = tf_keras.Model(inputs, tf_keras.layers.Add()(branches))
    trainable = sum(len(EXPECTED_WEIGHTS[name][0]) for name in NAMES)
    non_trainable = sum(len(EXPECTED_WEIGHTS[name][1]) for name in NAMES)
    conv = 2 * len(NAMES)
    assert len(model.trainable_weights) == conv + trainable
    assert len(model.non_trainable_weights) == non_trainable
    assert len({id(w) for w in model.weights}) == conv + trainable + non_trainable
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(tf.random.normal((2, 5, 5, CONV_CHANNELS)), training=True))
    gradients = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None for g in gradients)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_unknown_batch_and_spatial_sizes(front_end, name):
    """Traced once with [None, None, None, C], the layer gives its eager results on new shapes."""
    rng = case_rng("dynamic", name)
    channels = 6
    layer, _ = built_layer(front_end, name, np.zeros([1, 1, 1, channels], np.float32), rng,
                           groups=groups_for(name, channels, rng))
    spec = tf.TensorSpec([None, None, None, channels], tf.float32)
    traced = {
        training: tf.function(lambda x, training=training: layer(x, training=training),
                              input_signature=[spec], autograph=False)
        for training in (False, True)
    }
    for shape in ([2, 3, 5, channels], [3, 4, 2, channels]):
        x = tf.constant(random_input(rng, shape))
        for training in (False, True):  # inference first: training moves the moving statistics
            expected = layer(x, training=training).numpy()
            np.testing.assert_allclose(traced[training](x).numpy(), expected, rtol=1e-6, atol=1e-6)
