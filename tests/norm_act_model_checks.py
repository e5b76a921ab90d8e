"""Checks shared by the backbone tests (test_resnet.py, test_efficientnet.py).

Each check builds nothing itself: it receives a model factory and asserts on
behaviour that would break if the backbone wiring were wrong.
"""

import numpy as np
import tensorflow as tf
import tf_keras

from evonorm_tf.tf_keras import layers as tfk_layers

NORM_ACT_CLASSES = tuple(getattr(tfk_layers, name) for name in tfk_layers.__all__)


def norm_act_layers(model):
    """All norm-act layers of a (possibly nested) tf_keras model, in build order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, NORM_ACT_CLASSES):
            found.append(layer)
        elif isinstance(layer, tf_keras.Model):
            found.extend(norm_act_layers(layer))
    return found


def conv_kernels(model):
    """Kernels of every Conv2D / DepthwiseConv2D / Dense, including nested layers."""
    kernels = []
    for weight in model.weights:
        name = weight.name.split("/")[-1]
        if name.startswith("kernel") or name.startswith("depthwise_kernel"):
            kernels.append(weight)
    return kernels


def perturb_norm_act_weights(model, seed=0):
    """Sets every norm-act weight (trainable or not) to distinct random values."""
    rng = np.random.default_rng(seed)
    for layer in norm_act_layers(model):
        for weight in layer.weights:
            weight.assign(rng.uniform(0.5, 1.5, size=weight.shape).astype(np.float32))


def norm_act_values(model):
    return {
        f"{layer.name}/{weight.name.split('/')[-1]}": weight.numpy()
        for layer in norm_act_layers(model)
        for weight in layer.weights
    }


def check_forward_backward(model, images, num_outputs_key=None):
    """Training-mode forward and backward: finite outputs, a finite gradient for every weight."""
    with tf.GradientTape() as tape:
        outputs = model(images, training=True)
        tensors = list(outputs.values()) if isinstance(outputs, dict) else [outputs]
        loss = tf.add_n([tf.reduce_mean(tf.square(tf.cast(t, tf.float32))) for t in tensors])
    grads = tape.gradient(loss, model.trainable_weights)
    missing = [w.name for w, g in zip(model.trainable_weights, grads) if g is None]
    assert not missing, f"no gradient for {missing[:5]}"
    for weight, grad in zip(model.trainable_weights, grads):
        assert np.all(np.isfinite(grad.numpy())), f"non-finite gradient for {weight.name}"
    assert np.isfinite(loss.numpy())
    return outputs


def check_checkpoint_round_trip(make_model, tmp_path, images):
    """tf.train.Checkpoint restores every norm-act weight (incl. moving statistics) exactly."""
    model = make_model()
    model(images, training=False)
    perturb_norm_act_weights(model)
    saved = norm_act_values(model)
    assert saved, "the model has no norm-act weights"
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))

    restored_model = make_model()
    restored_model(images, training=False)
    before = norm_act_values(restored_model)
    assert any(not np.array_equal(before[key], saved[key]) for key in saved)
    tf.train.Checkpoint(model=restored_model).read(path).assert_existing_objects_matched()
    after = norm_act_values(restored_model)
    assert after.keys() == saved.keys()
    for key in saved:
        np.testing.assert_array_equal(after[key], saved[key], err_msg=key)
    np.testing.assert_allclose(
        _flat(restored_model(images, training=False)), _flat(model(images, training=False)), rtol=1e-5, atol=1e-5
    )


def _flat(outputs):
    if isinstance(outputs, dict):
        return np.concatenate([np.ravel(outputs[key].numpy()) for key in sorted(outputs)])
    return np.ravel(outputs.numpy())


def check_jit_train_step(classifier, images, labels):
    """An SGD step compiled with XLA runs, lowers nothing to NaN and updates the weights."""
    optimizer = tf_keras.optimizers.SGD(0.01)
    loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=True)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, classifier(x, training=True)) + tf.add_n(classifier.losses or [0.0])
        grads = tape.gradient(loss, classifier.trainable_weights)
        optimizer.apply_gradients(zip(grads, classifier.trainable_weights))
        return loss

    before = [w.numpy().copy() for w in classifier.trainable_weights]
    moving_before = [w.numpy().copy() for w in classifier.non_trainable_weights]
    first = float(train_step(images, labels))
    second = float(train_step(images, labels))
    assert np.isfinite(first) and np.isfinite(second)
    changed = sum(not np.array_equal(b, w.numpy()) for b, w in zip(before, classifier.trainable_weights))
    assert changed == len(before), f"only {changed} of {len(before)} weights changed"
    for b, w in zip(moving_before, classifier.non_trainable_weights):
        assert not np.array_equal(b, w.numpy()), f"moving statistic {w.name} not updated"
    return first, second


def check_weight_decay_only_on_kernels(model, images, l2):
    """`model.losses` is the L2 of the conv/dense kernels only (NumPy float64 reference),
    and gives no gradient to any norm-act weight."""
    model(images, training=False)
    kernels = conv_kernels(model)
    assert kernels
    expected = sum(l2 * np.sum(np.square(k.numpy().astype(np.float64))) for k in kernels)
    assert len(model.losses) == len(kernels)
    np.testing.assert_allclose(float(tf.add_n(model.losses)), expected, rtol=1e-5)
    norm_weights = [w for layer in norm_act_layers(model) for w in layer.trainable_weights]
    assert norm_weights
    with tf.GradientTape() as tape:
        regularization = tf.add_n(model.losses)
    grads = tape.gradient(regularization, norm_weights)
    assert all(g is None for g in grads)
    for layer in norm_act_layers(model):
        assert getattr(layer, "gamma_regularizer", None) is None
        assert getattr(layer, "beta_regularizer", None) is None


def check_channels_first_matches(make_model, images_nhwc):
    """The channels_first model with the same weights computes the transposed outputs."""
    last = make_model("channels_last")
    first = make_model("channels_first")
    last(images_nhwc, training=False)
    perturb_norm_act_weights(last, seed=3)
    images_nchw = tf.transpose(images_nhwc, [0, 3, 1, 2])
    first(images_nchw, training=False)
    assert len(first.weights) == len(last.weights)
    for source, target in zip(last.weights, first.weights):
        target.assign(source)
    expected = last(images_nhwc, training=False)
    actual = first(images_nchw, training=False)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert actual[key].shape[1] == expected[key].shape[-1], key
        np.testing.assert_allclose(
            tf.transpose(actual[key], [0, 2, 3, 1]).numpy(), expected[key].numpy(), rtol=1e-4, atol=1e-4,
            err_msg=key,
        )
