"""The cpu kernels' passes over x as compiled TensorFlow ops, at any input shape.

`native_ops.cc` holds the passes of the cpu kernels over channels_last x as
TensorFlow CPU ops, one pass each over x (and dy) whatever the shape: the
per-(sample, channel) sums (in double) and the elementwise y and dx; the small
statistics between them stay TensorFlow ops. Where they serve, kernels run
them at every shape (`evonorm_tf.kernels.cpu_launch`): static shapes compile
no XLA kernel, and where shapes change from call to call (a `tf.function`
with `None` dimensions, eager calls meeting new image sizes), unfused
TensorFlow ops would make a pass over x per elementwise step (B0: 24 passes
forward and backward, fused BN a handful). channels_first inputs, and
machines where the ops cannot be built, keep the XLA kernels at static
shapes and the plain TensorFlow ops elsewhere.

The source is compiled once per machine and TensorFlow version, on first
use, with the C++ compiler TensorFlow's own flags name (`tf.sysconfig`), into
`$EVONORM_TF_CACHE` (default `~/.cache/evonorm_tf`); about 15 s. Where it
cannot be built (no compiler), one warning names why and the plain
TensorFlow ops run instead; `EVONORM_TF_NATIVE=0` turns the ops off,
`EVONORM_TF_NATIVE=1` makes a failed build an error.
"""

import fcntl
import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading

import tensorflow as tf
from tensorflow.python.saved_model import save_context

__all__ = ["CACHE_ENV", "ENV", "affine", "affine_backward_dx", "affine_backward_sums", "available",
           "b_backward_dx", "b_backward_sums", "b_output", "build", "channel_moments", "mean_square",
           "s_backward_dx", "s_backward_sums", "s_output"]

ENV = "EVONORM_TF_NATIVE"
CACHE_ENV = "EVONORM_TF_CACHE"
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native_ops.cc")
_VALUES = ("auto", "0", "1")
_state = {}
_UNDIFFERENTIATED = set()  # op types marked by `_no_gradients`
_LOCK = threading.Lock()


def _mode():
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in _VALUES:
        raise ValueError(f"{ENV} must be one of {list(_VALUES)}, received {value!r}")
    return value


def _compiler():
    """The C++ compiler: `$CXX`, else the first of c++, g++, clang++ on the PATH; RuntimeError if none."""
    named = os.environ.get("CXX")
    if named:
        if shutil.which(named) is None:
            raise RuntimeError(f"the C++ compiler CXX={named!r} was not found")
        return named
    found = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if found is None:
        raise RuntimeError("no C++ compiler found (install g++, or set CXX)")
    return found


def _flags():
    return (["-std=c++17", "-shared", "-fPIC", "-O3", "-march=native", "-fno-trapping-math", "-mprefer-vector-width=512", "-w"]
            + tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags())


def _library_path(compiler):
    with open(_SOURCE, "rb") as source:
        digest = hashlib.sha256(source.read())
    for part in (tf.__version__, compiler, platform.machine(), platform.node(), *_flags()):
        digest.update(part.encode())
    cache = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "evonorm_tf")
    return os.path.join(cache, f"native_ops_{digest.hexdigest()[:16]}.so")


def build():
    """Compiles `native_ops.cc` (if not already cached) and returns the path of the shared library.

    Raises RuntimeError naming the compiler's error where it fails.
    """
    if not sys.platform.startswith("linux"):
        raise RuntimeError(f"the native ops are built on Linux only, not on {sys.platform}")
    compiler = _compiler()
    path = _library_path(compiler)
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (test workers, processes of a launch)
        if not os.path.exists(path):
            handle, partial = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
            os.close(handle)
            command = [compiler, _SOURCE, "-o", partial] + _flags()
            try:
                result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
            except subprocess.TimeoutExpired as error:
                os.remove(partial)
                raise RuntimeError(f"{compiler} took over {error.timeout:.0f} s on {_SOURCE}") from error
            if result.returncode:
                os.remove(partial)
                errors = [line for line in result.stderr.splitlines() if "error" in line] or [result.stderr[-500:]]
                raise RuntimeError(f"{compiler} failed on {_SOURCE}: {errors[0]}")
            os.replace(partial, path)
    return path


def _ops():
    """The loaded op module, or None where turned off or not buildable (warned once)."""
    mode = _mode()
    if mode == "0":
        return None
    with _LOCK:  # one build and load per process, whichever thread traces first
        if "module" not in _state:
            try:
                module = tf.load_op_library(build())
                _no_gradients()
                _state["module"] = module
            except (RuntimeError, OSError, tf.errors.NotFoundError) as error:
                if mode == "1":
                    raise
                logging.getLogger("evonorm_tf").warning(
                    "evonorm_tf: native kernels unavailable (%s); shapes not compiled by XLA run as plain "
                    "TensorFlow ops (slower). %s=0 silences this.", str(error).splitlines()[0], ENV)
                _state["module"] = None
        return _state["module"]


def _no_gradients():
    """Marks the ops of `native_ops.cc` as having no gradient of their own (once per process).

    They run only inside the kernels' `tf.custom_gradient`s, which give the
    gradients; but a tape around a `tf.function` differentiates the graph's
    intermediates as well, and stops at an op with no gradient registered.
    """
    with open(_SOURCE, encoding="utf-8") as source:
        names = re.findall(r'REGISTER_OP\("(\w+)"\)', source.read())
    for name in names:
        if name not in _UNDIFFERENTIATED:
            tf.no_gradient(name)
            _UNDIFFERENTIATED.add(name)


def available(channels_last):
    """Whether x of this layout takes the native ops here: channels_last, not turned off, built, not exporting.

    Graphs traced for a SavedModel (`tf.saved_model.save`, Keras `export`,
    and the TFLite converter, which saves first) keep the plain TensorFlow
    ops, so that they load and convert without this library.
    """
    if not channels_last or save_context.in_save_context():
        return False
    return _ops() is not None


# -- the ops, on the kernels' `[N, R, B, C]` view and stat-shaped statistics -----------------


def _rows(x4):
    return tf.reshape(x4, [tf.shape(x4)[0], -1, tf.shape(x4)[-1]])


def _matrix(stat, batch):
    """A `[N, 1, 1, C]` or `[1, 1, 1, C]` statistic as `[N, C]`."""
    return tf.broadcast_to(tf.reshape(stat, [-1, tf.shape(stat)[-1]]), [batch, tf.shape(stat)[-1]])


def _vector(t):
    return tf.reshape(t, [-1])


def _stat(t):
    return t[:, None, None, :]


def _alike(x4, dy4):
    """x and dy in one dtype: as they are, or (dy in another dtype than x's) both widened to float32, exactly."""
    if x4.dtype == dy4.dtype:
        return x4, dy4
    return tf.cast(x4, tf.float32), tf.cast(dy4, tf.float32)


def channel_moments(x4):
    """`cpu_sums.channel_moments` of channels_last `x4` in one pass: stat-shaped (shift, mean_delta, m2, m2_small)."""
    return tuple(_stat(t) for t in _ops().evonorm_channel_moments(_rows(x4)))


def mean_square(x4):
    """`cpu_sums.mean_square` of channels_last `x4` in one pass."""
    return tuple(_stat(t) for t in _ops().evonorm_mean_square(_rows(x4)))


def s_output(x4, v, scale, beta):
    """`x·σ(v·x)·scale + β` in x's dtype; scale stat-shaped, v and β `[C]`-sized."""
    y = _ops().evonorm_s_output(_rows(x4), _vector(v), _matrix(scale, tf.shape(x4)[0]), _vector(beta))
    return tf.reshape(y, tf.shape(x4))


def s_backward_sums(x4, dy4, v):
    """Stat-shaped Σ dy, Σ dy·f, Σ dy·f·x·(1 − σ) with f = x·σ(v·x)."""
    x4, dy4 = _alike(x4, dy4)
    return [_stat(t) for t in _ops().evonorm_s_backward_sums(_rows(x4), _rows(dy4), _vector(v))]


def s_backward_dx(x4, dy4, v, scale, coefficient, unit, origin, offset):
    """`dy·scale·σ·(1 + z·(1 − σ)) + coefficient·((x·unit − origin·unit) − offset·unit)` in x's dtype."""
    batch, dtype = tf.shape(x4)[0], x4.dtype
    stats = [_matrix(t, batch) for t in (scale, coefficient, unit, origin, offset)]
    x4, dy4 = _alike(x4, dy4)
    dx = _ops().evonorm_s_backward_dx(_rows(x4), _rows(dy4), _vector(v), *stats)
    return tf.cast(tf.reshape(dx, tf.shape(x4)), dtype)


def affine(x4, origin, offset, scale, beta):
    """GroupNorm's and FRN's `((x − origin) − offset)·scale + β` in x's dtype; β `[C]`-sized."""
    batch = tf.shape(x4)[0]
    stats = [_matrix(t, batch) for t in (origin, offset, scale)]
    return tf.reshape(_ops().evonorm_affine(_rows(x4), *stats, _vector(beta)), tf.shape(x4))


def affine_backward_sums(x4, dy4, origin):
    """Stat-shaped Σ dy and Σ dy·(x − origin)."""
    x4, dy4 = _alike(x4, dy4)
    return [_stat(t) for t in _ops().evonorm_affine_backward_sums(_rows(x4), _rows(dy4),
                                                                 _matrix(origin, tf.shape(x4)[0]))]


def affine_backward_dx(x4, dy4, scale, coefficient, unit, origin, offset, shift):
    """`dy·scale + coefficient·((x·unit − origin·unit) − offset·unit) − shift` in x's dtype."""
    batch, dtype = tf.shape(x4)[0], x4.dtype
    stats = [_matrix(t, batch) for t in (scale, coefficient, unit, origin, offset, shift)]
    x4, dy4 = _alike(x4, dy4)
    dx = _ops().evonorm_affine_backward_dx(_rows(x4), _rows(dy4), *stats)
    return tf.cast(tf.reshape(dx, tf.shape(x4)), dtype)


def b_output(kind, x4, v, instance, batch_std, gamma, beta):
    """`x/max(σ_b, r)·γ + β` in x's dtype (r of `kind`); instance stat-shaped, the rest `[C]`-sized."""
    y = _ops().evonorm_b_output(_rows(x4), _vector(v), _matrix(instance, tf.shape(x4)[0]), _vector(batch_std),
                                _vector(gamma), _vector(beta), kind=kind)
    return tf.reshape(y, tf.shape(x4))


def b_backward_sums(kind, x4, dy4, v, instance, batch_std):
    """Stat-shaped Σ dy, Σ P and the B-series' branch sums (`cpu_b_series._b_backward_partials`)."""
    x4, dy4 = _alike(x4, dy4)
    sums = _ops().evonorm_b_backward_sums(_rows(x4), _rows(dy4), _vector(v), _matrix(instance, tf.shape(x4)[0]),
                                          _vector(batch_std), kind=kind)
    return [_stat(t) for t in sums[:3 if kind == "b1" else 4]]


def b_backward_dx(kind, x4, dy4, v, instance, batch_std, gamma, slopes, units, origin, offset):
    """The B-series dx (`cpu_b_series._b_backward_dx`) in x's dtype."""
    batch, dtype = tf.shape(x4)[0], x4.dtype
    stats = [_matrix(t, batch) for t in (*slopes, *units, origin, offset)]
    x4, dy4 = _alike(x4, dy4)
    dx = _ops().evonorm_b_backward_dx(_rows(x4), _rows(dy4), _vector(v), _matrix(instance, batch),
                                      _vector(batch_std), _vector(gamma), *stats, kind=kind)
    return tf.cast(tf.reshape(dx, tf.shape(x4)), dtype)
