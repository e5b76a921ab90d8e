"""Which implementation of each formula a layer runs: the kernel paths.

Every formula of `evonorm_tf.formulas` (the definitions, and the fallback)
can have faster implementations, one per kernel path. A layer chooses its path
once, when it is built, and keeps the chosen implementations; its calls never
consult a global switch. See `docs/kernels.md` for why each path exists.

| path | what runs |
|---|---|
| `cpu` | `evonorm_tf.kernels.cpu`: one-pass statistics, hand-written gradients, one XLA launch per direction; tuned for CPUs |
| `portable` | `evonorm_tf.kernels.portable`: float reductions and elementwise ops only (no integer or complex ops, no dots), exact on TPU and GPU |
| `reference` | the definitions in `evonorm_tf.formulas`, differentiated by TensorFlow |
| `auto` | `portable` on TPU and GPU, `cpu` on CPU, from the device the layer is built on |

The path comes from, in order: the innermost `with kernels.use(path):`, the
last `kernels.set_path(path)`, the environment variable `EVONORM_TF_KERNELS`,
and `auto`.

Implementations register themselves (`register`); a formula without one for a
path falls back to its definition.
"""

import contextlib
import os
import threading

import tensorflow as tf

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "PATHS",
    "Selection",
    "get_path",
    "implementation",
    "register",
    "resolve",
    "set_path",
    "use",
]

#: The valid kernel paths.
PATHS = ("auto", "cpu", "portable", "reference")
#: The environment variable read when no path is set from Python.
ENVIRONMENT_VARIABLE = "EVONORM_TF_KERNELS"

_IMPLEMENTATIONS = {}  # (formula name, path) → function
_state = threading.local()
_set_path = None


def check_path(path):
    """Returns `path` if it is a kernel path, else raises a ValueError naming the valid ones."""
    if path not in PATHS:
        raise ValueError(f"kernel path must be one of {', '.join(PATHS)}; received {path!r}")
    return path


def set_path(path):
    """Sets the kernel path of layers built from now on (None: back to the environment variable)."""
    global _set_path
    _set_path = None if path is None else check_path(path)


@contextlib.contextmanager
def use(path):
    """Context manager: layers built inside it use `path` (`"auto"`, `"cpu"`, ...)."""
    check_path(path)
    stack = _state.__dict__.setdefault("stack", [])
    stack.append(path)
    try:
        yield path
    finally:
        stack.pop()


def get_path():
    """The requested kernel path, before `auto` is resolved."""
    stack = getattr(_state, "stack", None)
    if stack:
        return stack[-1]
    if _set_path is not None:
        return _set_path
    value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower() or "auto"
    if value not in PATHS:
        raise ValueError(f"{ENVIRONMENT_VARIABLE} must be one of {', '.join(PATHS)}; received {value!r}")
    return value


def _accelerator(device_names):
    return any(":GPU:" in name.upper() or ":TPU:" in name.upper() for name in device_names)


def _scope_device():
    """The device of the innermost `tf.device` scope ("" when none)."""
    if tf.executing_eagerly():
        from tensorflow.python.eager import context  # the eager device scope has no public reader

        return context.context().device_name or ""
    return tf.no_op(name="kernel_path_probe").device or ""


def resolve(path=None):
    """The concrete path (`cpu`, `portable` or `reference`) for `path` (default `get_path()`).

    `auto` becomes `portable` under a TPUStrategy, under a strategy whose
    devices include a GPU or TPU, in a `tf.device` scope of a GPU or TPU, or
    with no scope when TensorFlow sees a GPU; otherwise `cpu`.
    """
    path = check_path(get_path() if path is None else path)
    if path != "auto":
        return path
    if tf.distribute.has_strategy():
        strategy = tf.distribute.get_strategy()
        if "TPU" in type(strategy).__name__:
            return "portable"
        devices = getattr(strategy.extended, "worker_devices", ())
        if devices:
            return "portable" if _accelerator(devices) else "cpu"
    device = _scope_device()
    if device:
        return "portable" if _accelerator([device]) else "cpu"
    if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
        return "portable"
    return "cpu"


def register(formula, path):
    """Decorator: registers a function as the `path` implementation of `formulas.<formula>`.

    The function takes the formula's arguments and computes the same values.
    """
    check_path(path)
    if path in ("auto", "reference"):
        raise ValueError(f"implementations register for cpu or portable; received {path!r}")

    def decorator(function):
        _IMPLEMENTATIONS[(formula, path)] = function
        return function

    return decorator


def implementation(formula, path):
    """The function computing `formulas.<formula>` on kernel path `path` (resolved if `auto`)."""
    from evonorm_tf import formulas

    path = resolve(path)
    reference = getattr(formulas, formula, None)
    if reference is None:
        raise ValueError(f"formula must be one of {sorted(formulas.__all__)}; received {formula!r}")
    return _IMPLEMENTATIONS.get((formula, path), reference)


class Selection:
    """Every formula's implementation on one kernel path, chosen once.

    `Selection("auto").evonorm_s0(...)` runs the implementation of
    `formulas.evonorm_s0` for the path `auto` resolved to when the selection
    was made (attribute `path`). Layers make one when they are built.
    """

    def __init__(self, path=None):
        from evonorm_tf import formulas

        self.path = resolve(path)
        for name in formulas.__all__:
            setattr(self, name, implementation(name, self.path))

    def __repr__(self):
        return f"Selection({self.path!r})"


# The implementations register themselves on import.
from evonorm_tf.kernels import cpu, cpu_baselines, portable  # noqa: E402,F401
