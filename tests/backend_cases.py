"""Helpers of the backend tests: the process's Keras backend, its tensors and gradients.

The tests in `tests/backends` run under whatever `KERAS_BACKEND` the process
has (TensorFlow in the default suite; `tests/core/test_keras_backends.py`
reruns them under JAX and PyTorch in subprocesses). These helpers hide the
one thing Keras does not abstract: how each backend takes a gradient.
"""

import keras
import numpy as np

BACKEND = keras.backend.backend()


def to_numpy(tensor):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(tensor, "float32")), np.float64)


def is_native(tensor):
    """True if `tensor` is a tensor of the process's backend (no TensorFlow tensor on JAX/torch)."""
    module = type(tensor).__module__
    native = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}[BACKEND]
    return module.split(".")[0] in native


def output_and_gradients(layer, x, training, cotangent=None):
    """`(y, [dL/dx] + [dL/dw for trainable w])` for `L = Σ y²`, as NumPy float64 arrays.

    With a `cotangent` (an array of y's shape) the loss is the linear `L = Σ y·cotangent`
    instead, as in the adversarial sweep: its gradients stay finite where y² would not.
    The layer is built on first use; its moving statistics update as in a call.
    """
    if not layer.built:
        layer(x, training=False)
    if cotangent is not None:
        cotangent = np.asarray(cotangent, np.float32)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            y32 = tf.cast(y, tf.float32)
            loss = tf.reduce_sum(y32 * cotangent if cotangent is not None else tf.square(y32))
        gradients = tape.gradient(loss, [x] + layer.trainable_weights)
    elif BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss(trainable_values, inputs):
            y, _ = layer.stateless_call(trainable_values, non_trainable, inputs, training=training)
            y32 = y.astype("float32")
            return jnp.sum(y32 * cotangent if cotangent is not None else jnp.square(y32)), y

        (_, y), (weight_gradients, x_gradient) = jax.value_and_grad(
            loss, argnums=(0, 1), has_aux=True
        )(trainable, jnp.asarray(x))
        gradients = [x_gradient] + list(weight_gradients)
    else:
        import torch

        x = torch.tensor(np.asarray(x), requires_grad=True)
        for variable in layer.trainable_variables:
            variable.value.grad = None
        y = layer(x, training=training)
        if cotangent is not None:
            torch.sum(y.float() * torch.tensor(np.asarray(cotangent, np.float32))).backward()
        else:
            torch.sum(torch.square(y.float())).backward()
        gradients = [x.grad] + [variable.value.grad for variable in layer.trainable_variables]
    assert all(g is not None for g in gradients), "a gradient is missing"
    return to_numpy(y), [to_numpy(g) for g in gradients]


def randomize_weights(layer, rng):
    """Assigns random non-trivial weights (as `layer_cases.randomize_weights`, by Keras 3 variable path);
    returns them as float64 arrays by weight name."""
    weights = {}
    for variable in layer.weights:
        name = variable.path.split("/")[-1]
        size = tuple(variable.shape)
        if name == "gamma":
            value = rng.uniform(0.5, 1.5, size) * rng.choice([-1.0, 1.0], size)
        elif name == "moving_variance":
            value = rng.uniform(0.4, 2.0, size)
        elif name == "v":
            value = rng.uniform(-1.5, 1.5, size)
        else:  # beta, tau, moving_mean
            value = rng.normal(0.0, 0.5, size)
        variable.assign(value.astype(np.float32))
        weights[name] = value.astype(np.float32).astype(np.float64)
    return weights
