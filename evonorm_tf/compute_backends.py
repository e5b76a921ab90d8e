"""Where a layer's tensor operations come from: TensorFlow, or `keras.ops`.

The core mixins (`evonorm_tf.norm_act_core`, `baseline_core`,
`shadow_batch_norm`) never call a tensor library directly: they call the
compute backend of their front-end, the class attribute `_compute`.

| front-end | `_compute` | formulas |
|---|---|---|
| tf_keras | `TENSORFLOW` | `evonorm_tf.kernels` (the kernel path chosen at build) |
| Keras 3, `KERAS_BACKEND=tensorflow` | `TENSORFLOW` | the same kernels |
| Keras 3, `KERAS_BACKEND=jax` or `torch` | `KERAS_OPS` | `evonorm_tf.backend_formulas` |

Both expose the same methods; only the TensorFlow one knows `tf.distribute`
(synchronized statistics across replicas of a strategy) and the kernel paths.
"""

import numbers

import keras
import numpy as np
import tensorflow as tf

from evonorm_tf import backend_formulas, backend_gradients, kernels, statistics

__all__ = ["KERAS_OPS", "TENSORFLOW", "for_keras_backend", "training_flag"]


def training_flag(training):
    """Returns a Python bool, or a boolean tensor when `training` is dynamic (TensorFlow)."""
    if training is None:
        return False
    if isinstance(training, bool):
        return training
    static = tf.get_static_value(training)
    if static is not None:
        return bool(static)
    return tf.cast(training, tf.bool)


def check_active_paths(value, num_paths):
    """m as a Python int in 1..k; ValueError naming the value otherwise."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= num_paths:
        raise ValueError(
            f"active_paths must be an integer in [1, num_paths={num_paths}], "
            f"received active_paths={value!r}"
        )
    return int(value)


class TensorFlowCompute:
    """TensorFlow ops and the kernel paths: tf_keras, and Keras 3 on the TensorFlow backend."""

    name = "tensorflow"
    #: `synchronized=True` all-reduces batch statistics over `tf.distribute` replicas.
    all_reduces_batch_statistics = True

    training_flag = staticmethod(training_flag)
    activations = {"relu": tf.nn.relu, "silu": tf.nn.silu}

    def kernels(self):
        """The formulas' implementations, chosen once (`evonorm_tf.kernels.Selection`)."""
        return kernels.Selection()

    def cond(self, predicate, true_fn, false_fn):
        return tf.cond(predicate, true_fn, false_fn)

    def cast(self, x, dtype):
        return tf.cast(x, dtype)

    def clip(self, x, low, high):
        return tf.clip_by_value(x, low, high)

    def read(self, variable):
        return tf.convert_to_tensor(variable)

    def batch_variance(self, x, data_format, synchronized):
        """`s2_bhw` as a `[C]` vector; `synchronized` all-reduces over `tf.distribute` replicas."""
        return tf.reshape(statistics.batch_variance(x, data_format, synchronized), [-1])

    def batch_moments(self, x, data_format):
        """Per-channel batch mean and variance, each a `[C]` vector."""
        mean, variance = statistics.batch_moments(x, data_format)
        return tf.reshape(mean, [-1]), tf.reshape(variance, [-1])

    def path_index(self, active_paths, num_paths):
        """Shadow BN's row `m − 1` (int32); a dynamic m is checked by an assertion."""
        static = tf.get_static_value(active_paths)
        if static is not None:
            return tf.constant(check_active_paths(static, num_paths) - 1, tf.int32)
        active_paths = tf.cast(tf.reshape(active_paths, []), tf.int32)
        checks = [
            tf.debugging.assert_greater_equal(active_paths, 1, message="active_paths must be >= 1"),
            tf.debugging.assert_less_equal(
                active_paths, num_paths, message=f"active_paths must be <= num_paths={num_paths}"
            ),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(active_paths - 1)

    def row(self, matrix, index):
        return tf.gather(tf.convert_to_tensor(matrix), index)

    def update_row(self, variable, index, batch, momentum):
        """`variable[index] ← momentum·variable[index] + (1 − momentum)·batch`; other rows bit-identical."""
        current = tf.convert_to_tensor(variable)
        selected = tf.equal(tf.range(variable.shape[0]), index)[:, None]
        updated = momentum * current + (1.0 - momentum) * batch[None, :]
        variable.assign(tf.where(selected, updated, current))

    def shadow_batch_norm(self, *args):
        from evonorm_tf import shadow_batch_norm  # the TensorFlow formula lives with its layer

        return shadow_batch_norm.shadow_batch_norm(*args)


class _KerasOpsSelection:
    """`backend_formulas` in the shape of a `kernels.Selection` (path `"keras.ops"`).

    On JAX with `backend_gradients.gradients() == "custom"` (read here, when a
    layer is built), EvoNorm-B0 in training comes from `backend_gradients`:
    the same outputs with a hand-derived gradient.
    """

    path = "keras.ops"

    def __init__(self):
        for name in backend_formulas.FORMULAS:
            setattr(self, name, getattr(backend_formulas, name))
        if keras.backend.backend() == "jax" and backend_gradients.gradients() == "custom":
            self.path = "keras.ops+custom-gradients"
            self.evonorm_b_training = backend_gradients.evonorm_b_training

    def __repr__(self):
        return f"Selection({self.path!r})"


class KerasOpsCompute:
    """`keras.ops` on the process's Keras backend: Keras 3 on JAX and PyTorch."""

    name = "keras.ops"
    #: One program sees the global batch: `synchronized=True` needs no all-reduce.
    all_reduces_batch_statistics = False

    activations = {"relu": keras.ops.relu, "silu": keras.ops.silu}

    def training_flag(self, training):
        """A Python bool. Keras passes one; a value traced inside a JAX program is refused,
        as by Keras's own BatchNormalization (the moving statistics cannot update under `cond`)."""
        if training is None:
            return False
        if isinstance(training, (bool, np.bool_)):
            return bool(training)
        try:
            return bool(keras.ops.convert_to_numpy(training))
        except Exception as error:  # a tracer: no Python value exists
            raise TypeError(
                f"training must be a Python bool on the {keras.backend.backend()} backend, "
                f"received the traced value {training!r}"
            ) from error

    def kernels(self):
        return _KerasOpsSelection()

    def cond(self, predicate, true_fn, false_fn):
        return keras.ops.cond(predicate, true_fn, false_fn)

    def cast(self, x, dtype):
        return keras.ops.cast(x, dtype)

    def clip(self, x, low, high):
        return keras.ops.clip(x, low, high)

    def read(self, variable):
        return keras.ops.convert_to_tensor(variable)

    def batch_variance(self, x, data_format, synchronized):
        """`s2_bhw` as a `[C]` vector: over the global batch under a JAX `keras.distribution`."""
        del synchronized  # one program sees the global batch; nothing to all-reduce
        return keras.ops.reshape(backend_formulas.batch_moments(x, data_format)[1], (-1,))

    def batch_moments(self, x, data_format):
        mean, variance = backend_formulas.batch_moments(x, data_format)
        return keras.ops.reshape(mean, (-1,)), keras.ops.reshape(variance, (-1,))

    def batch_norm_moments(self, x, axes):
        """Keras BatchNormalization's `(mean, variance)` over `axes`, the variance saturated."""
        return backend_formulas.batch_norm_moments(x, axes)

    def path_index(self, active_paths, num_paths):
        """Shadow BN's row `m − 1` (int32); a traced m is clipped to 1..k."""
        if isinstance(active_paths, (numbers.Integral, np.generic)):
            return check_active_paths(active_paths, num_paths) - 1
        try:
            value = keras.ops.convert_to_numpy(active_paths)
        except Exception:  # traced: no Python-side check is possible
            index = keras.ops.reshape(keras.ops.cast(active_paths, "int32"), ()) - 1
            return keras.ops.clip(index, 0, num_paths - 1)
        return check_active_paths(value.reshape(()), num_paths) - 1

    def row(self, matrix, index):
        return keras.ops.take(keras.ops.convert_to_tensor(matrix), index, axis=0)

    def update_row(self, variable, index, batch, momentum):
        current = keras.ops.convert_to_tensor(variable)
        selected = keras.ops.expand_dims(keras.ops.equal(keras.ops.arange(variable.shape[0]), index), 1)
        updated = momentum * current + (1.0 - momentum) * keras.ops.expand_dims(batch, 0)
        variable.assign(keras.ops.where(selected, updated, current))

    def shadow_batch_norm(self, *args):
        return backend_formulas.shadow_batch_norm(*args)


TENSORFLOW = TensorFlowCompute()
KERAS_OPS = KerasOpsCompute()


def for_keras_backend():
    """The compute backend of Keras 3 layers in this process (`KERAS_BACKEND`)."""
    return TENSORFLOW if keras.backend.backend() == "tensorflow" else KERAS_OPS
