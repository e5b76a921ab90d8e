"""How the cpu kernels run: native ops where they serve, else XLA-compiled per hot static shape.

Each kernel of `evonorm_tf.kernels.cpu` is written once, in TensorFlow ops.
Its passes over channels_last x are native ops (`evonorm_tf.kernels.native`,
compiled once per machine, not per shape) wherever it is not compiled by
XLA, and where those serve the kernel runs so at every shape, the small
statistics as TensorFlow ops between them (`kernel(native_form=True)`,
`NATIVE`). Elsewhere (channels_first x, no C++ compiler, `NATIVE = False`)
a kernel is one `jit_compile=True` function per configuration and static
input shape (one XLA launch per direction), compiled once a shape recurs,
in a bounded cache; shapes that come and go run a shape-generic graph
instead; see `kernel`. Inside a compiled caller kernels join its XLA
cluster. Kernels run with gradient tapes stopped (`record.stop_recording`):
they sit inside `tf.custom_gradient`s, and a taped input would make
TensorFlow compile a variant that also returns every intermediate.
`COMPILED = False` runs the same code as plain TF ops.
"""

import collections
import functools

import tensorflow as tf
from tensorflow.python.eager import record
from tensorflow.python.ops import control_flow_util

from evonorm_tf.kernels import native

__all__ = ["COMPILED", "COMPILE_AFTER", "MAX_COMPILED", "NATIVE", "SIZES_PER_CONFIGURATION", "compiling", "kernel"]

#: Run each kernel as one `jit_compile=True` function (False: plain TF ops).
COMPILED = True
#: At static shapes too, kernels with a native form (`kernel(native_form=True)`) run it rather than
#: compile, where the native ops serve x's layout (`evonorm_tf.kernels.native.available`).
NATIVE = True
#: Compiled kernels kept per kernel (least recently used dropped first).
MAX_COMPILED = 16
#: Executing eagerly, a shape's kernel is compiled on its call number `COMPILE_AFTER`.
COMPILE_AFTER = 3
#: Executing eagerly, a configuration that meets more spatial sizes than this compiles no more.
SIZES_PER_CONFIGURATION = 4


def kernel(layout_index, plain_only=(), native_form=False):
    """Decorator: the kernel as XLA-compiled functions per static shape, or as a shape-generic graph.

    `native_form`: the kernel's passes over x are native ops wherever it is
    not compiled (`native.available`). Then, where the native ops serve x's
    layout and `NATIVE` is set, static shapes run that form as well (in a
    graph, inlined; eagerly, the shape-generic graph): it compiles nothing,
    and it is the faster (EvoNorm-S0's float32 ResNet-50 step: 0.99–1.02x
    BN's, against 1.08x with the XLA kernels; `bench/resnet50.py
    --cpu-kernels`). Inside a compiled caller kernels are compiled (inlined).

    `plain_only`: indices of arguments used only as plain TensorFlow ops
    (tensors a plain-op forward pass kept, or None): compiled kernels get
    None there, and they are no part of a compiled kernel's key, so a shape
    compiles on the same call whether its forward pass ran compiled or not.

    The leading arguments of every kernel are Python values (kind,
    channels_last at `layout_index`, ...), the rest tensors. Calls are routed:

    * Any input shape unknown (a `tf.function` traced with `None` dims): the
      kernel's ops are inlined into the caller's graph, shape-generic (inside
      a compiled model they join its XLA cluster).
    * Static shapes: one `jit_compile=True` function per configuration and
      shape, kept in a least-recently-used cache of `MAX_COMPILED` entries.
      Executing eagerly, a shape gets its compiled kernel only on its
      `COMPILE_AFTER`-th call; before that (e.g. a new image size at every
      call) it runs one shape-generic graph per configuration and rank,
      traced once, so a stream of new shapes compiles nothing. A
      configuration (everything but the spatial size) that has met more
      than `SIZES_PER_CONFIGURATION` spatial sizes eagerly compiles no more.
    """

    def decorator(function):
        compiled = collections.OrderedDict()
        calls = collections.OrderedDict()
        generic = {}
        sizes = collections.defaultdict(set)  # configuration → shapes met eagerly (bounded)

        def call(*args):
            # The kernels sit inside `tf.custom_gradient`s: keeping them off any
            # gradient tape keeps TensorFlow from compiling a variant that also
            # returns every intermediate for autodiff (one context for all
            # inputs; a `tf.stop_gradient` each was an eager op each).
            with record.stop_recording():
                return route(args)

        def route(args):
            args = [tf.convert_to_tensor(a) if isinstance(a, tf.Variable) else a for a in args]
            if not COMPILED or any(_is_tensor(a) and not a.shape.is_fully_defined() for a in args):
                return function(*args)
            if native_form and NATIVE and not compiling() and native.available(args[layout_index]):
                return _generic(generic, function, layout_index, args) if tf.executing_eagerly() else function(*args)
            plain_args, args = args, [None if i in plain_only else a for i, a in enumerate(args)]
            key = tuple((tuple(a.shape), a.dtype) if _is_tensor(a) else a for a in args)
            if key not in compiled and tf.executing_eagerly():
                calls[key] = calls.pop(key, 0) + 1
                if len(calls) > 4 * MAX_COMPILED:
                    calls.popitem(last=False)
                configuration = _configuration(args, layout_index)
                if configuration not in sizes and len(sizes) >= 4 * MAX_COMPILED:
                    del sizes[next(iter(sizes))]
                if len(sizes[configuration]) <= SIZES_PER_CONFIGURATION:
                    sizes[configuration].add(key)
                if calls[key] < COMPILE_AFTER or len(sizes[configuration]) > SIZES_PER_CONFIGURATION:
                    return _generic(generic, function, layout_index, plain_args)
            if key not in compiled:
                compiled[key] = _concrete(function, args, lambda a: a.shape, jit_compile=True)
                if len(compiled) > MAX_COMPILED:
                    compiled.popitem(last=False)
            compiled.move_to_end(key)
            return compiled[key](args)

        call.__name__ = function.__name__
        call.compiled = compiled
        return call

    return decorator


def compiling():
    """Whether the code being traced will be compiled by XLA (a compiled kernel, or inside a compiled caller).

    Kernel code takes forms that pay only in XLA's fused loops where plain
    TensorFlow ops (the shape-generic graph, `COMPILED = False`) would pay
    for them in extra x-sized tensors.
    """
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _configuration(args, layout_index):
    """A kernel call's key without the spatial dimensions of its tensors (kept: batch, channels, rank)."""
    channel_axis = -1 if args[layout_index] else 1
    return tuple((a.shape[0], a.shape[channel_axis], a.shape.rank, a.dtype) if _is_tensor(a) and a.shape.rank > 1
                 else (tuple(a.shape), a.dtype) if _is_tensor(a) else a for a in args)


def _is_tensor(a):
    return isinstance(a, (tf.Tensor, tf.Variable))


def _generic(cache, function, layout_index, args):
    """Runs `function` as a graph traced once per configuration, channel count, tensor ranks and dtypes.

    Every dimension of the tensors is left unknown except the channels (the
    last axis of channels_last tensors of rank > 1, axis 1 of channels_first ones).
    """
    channel_axis = -1 if args[layout_index] else 1
    # Channels (and whole vectors) are part of the signature below, hence of the key.
    key = tuple(
        (a.shape.rank, a.dtype, a.shape[channel_axis] if a.shape.rank > 1 else tuple(a.shape))
        if _is_tensor(a) else a
        for a in args
    )
    if key not in cache:

        def generic_shape(a):
            if a.shape.rank <= 1:
                return a.shape
            shape = [None] * a.shape.rank
            shape[channel_axis] = a.shape[channel_axis]
            return shape

        if len(cache) >= 4 * MAX_COMPILED:
            del cache[next(iter(cache))]
        cache[key] = _concrete(function, args, generic_shape)
    return cache[key](args)


def _concrete(function, args, shape_of, **options):
    """`function` traced once for `args`: a callable of the same arguments that passes only their tensors.

    The Python values of `args` are fixed at trace time; each tensor gets a
    `tf.TensorSpec` of shape `shape_of(tensor)`. The concrete function is
    called directly: a `tf.function` call would bind its arguments to its
    signature again at every call (a quarter of a millisecond, eagerly).
    """
    tensors = [i for i, a in enumerate(args) if _is_tensor(a)]

    def run(*values):
        full = list(args)
        for i, value in zip(tensors, values):
            full[i] = value
        return function(*full)

    signature = [tf.TensorSpec(shape_of(args[i]), args[i].dtype) for i in tensors]
    # A `partial` per trace: TF counts retracing per Python code object, and would
    # report these first traces of new shapes as retracing.
    concrete = tf.function(functools.partial(run), autograph=False, **options).get_concrete_function(*signature)

    def call(call_args):
        values = [call_args[i] for i in tensors]
        if tf.executing_eagerly():
            # Tapes are stopped (`kernel`): the function runs as it is, without
            # `concrete(...)`'s checks of the arguments against its signature
            # (half its time per call, eagerly).
            return concrete._call_flat(values, concrete.captured_inputs)  # pylint: disable=protected-access
        return concrete(*values)

    return call


