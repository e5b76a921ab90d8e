"""Forward+backward time of the Keras 3 layers on each Keras backend, as ratios to Keras BatchNorm.

For each backend (one process each, `KERAS_BACKEND` set before Keras loads)
it times, in training mode, `y = layer(x, training=True)` and the gradients
of `Σ y·dy` (a fixed random `dy`) with respect to x and the trainable
weights:

* tensorflow: one `tf.function` (no XLA) with a `tf.GradientTape`;
* jax: one `jax.jit` of `jax.value_and_grad` over `layer.stateless_call`;
* torch: eager autograd, `y.backward(dy)`.

Each layer is warmed up (tracing, compilation), then timed in `--repeats`
interleaved rounds of `--iters` calls; the median over all calls is divided
by the median of `keras.layers.BatchNormalization` (+ ReLU) timed in the
same process. Ratios of one backend are comparable with each other, not
across backends. The load average is printed with the numbers.

`--jax-gradients` adds, on JAX, EvoNorm-B0 with its hand-derived gradient
(`evonorm_tf.backend_gradients`, row "evonorm_b0 custom") next to the same
layer differentiated by JAX ("evonorm_b0 autodiff"), timed in the same
interleaved rounds, and prints custom/autodiff.

    python bench/backends.py                                # every installed backend
    python bench/backends.py --backends jax --shape 8,28,28,128 --iters 20
    python bench/backends.py --backends jax --jax-gradients --layers evonorm_b0
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT_LAYERS = ("evonorm_b0", "evonorm_s0", "gn_relu", "frn_tlu")
REFERENCE = "keras_bn_relu"
#: The layers with hand-derived JAX gradients (`evonorm_tf.backend_gradients`).
CUSTOM_GRADIENTS = ("evonorm_b0",)


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated among tensorflow, jax, torch (uninstalled ones are skipped)")
    parser.add_argument("--layers", default=",".join(DEFAULT_LAYERS), help="norm-act names")
    parser.add_argument("--shape", default="16,28,28,128", help="N,H,W,C (channels_last)")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jax-gradients", action="store_true",
                        help="on JAX, time EvoNorm-B0 with its hand-derived gradient and with autodiff")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one backend's run
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        parser.exit(2, f"backends.py: error: --backends {args.backends!r}: valid are {', '.join(BACKENDS)}\n")
    try:
        shape = tuple(int(size) for size in args.shape.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        parser.exit(2, f"backends.py: error: --shape {args.shape!r}: four positive integers N,H,W,C\n")
    if args.iters < 1 or args.repeats < 1:
        parser.exit(2, "backends.py: error: --iters and --repeats must be >= 1\n")
    args.backends, args.shape = backends, shape
    args.layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    return args


def _step_function(layer, x, dy):
    """A function running one forward+backward pass of `layer` on the process's backend."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
            return tape.gradient(y, [x] + layer.trainable_weights, output_gradients=dy)

        return lambda: [g.numpy() for g in step()]
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss(weights, inputs):
            y, _ = layer.stateless_call(weights, non_trainable, inputs, training=True)
            return jnp.sum(y * dy)

        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        return lambda: jax.block_until_ready(step(trainable, x))
    import torch

    def step():
        inputs = x.detach().requires_grad_(True)
        for variable in layer.trainable_variables:
            variable.value.grad = None
        layer(inputs, training=True).backward(dy)
        return inputs.grad

    return step


def _measure(args):
    """Runs in the backend's process: {layer: median seconds}."""
    import keras
    import numpy as np

    import evonorm_tf
    from evonorm_tf import backend_gradients

    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(rng.normal(0.5, 1.0, args.shape).astype("float32"))
    dy = keras.ops.convert_to_tensor(rng.normal(size=args.shape).astype("float32"))
    layers = {REFERENCE: (keras.Sequential([keras.layers.BatchNormalization(), keras.layers.ReLU()]), None)}
    compare = args.jax_gradients and keras.backend.backend() == "jax"
    for name in args.layers:
        grouped = name.startswith(("gn_", "evonorm_s"))
        kwargs = {"groups": 32} if grouped else {}
        if compare and name in CUSTOM_GRADIENTS:
            for gradients in ("autodiff", "custom"):
                layers[f"{name} {gradients}"] = (evonorm_tf.get_norm_act(name, **kwargs), gradients)
        else:
            layers[name] = (evonorm_tf.get_norm_act(name, **kwargs), None)
    steps = {}
    for name, (layer, gradients) in layers.items():
        backend_gradients.set_gradients(gradients)
        layer(x, training=True)  # builds (the gradients are chosen here)
        backend_gradients.set_gradients(None)
        steps[name] = _step_function(layer, x, dy)
        steps[name]()  # warm-up: tracing and compilation
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            for _ in range(args.iters):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _run_backend(backend, argv):
    environment = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
                   "PYTHONPATH": REPOSITORY + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--json"],
                            capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        sys.exit(f"backends.py: the {backend} run failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = _parse_args(argv)
    if args.json:
        import keras  # noqa: F401  (before TensorFlow: see evonorm_tf/__init__.py)

        from evonorm_tf import registry

        for name in args.layers:
            if not registry.is_known(name):
                sys.exit(f"backends.py: unknown layer {name!r}; valid: {', '.join(registry.names())}")
        print(json.dumps(_measure(args)))
        return
    installed = [b for b in args.backends if b == "tensorflow" or importlib.util.find_spec(b)]
    results = {backend: _run_backend(backend, argv) for backend in installed}
    print(f"forward+backward, training, float32, shape {','.join(map(str, args.shape))}, "
          f"median of {args.repeats}x{args.iters} calls; load average {os.getloadavg()[0]:.1f}")
    print("ratios to keras.layers.BatchNormalization + ReLU of the same backend (its time in ms)")
    print("| layer | " + " | ".join(installed) + " |")
    print("|---|" + "---:|" * len(installed))
    print(f"| {REFERENCE} (ms) | " + " | ".join(
        f"{results[b][REFERENCE] * 1e3:.2f}" for b in installed) + " |")
    rows = sorted({name for b in installed for name in results[b] if name != REFERENCE},
                  key=lambda row: (args.layers.index(row.split()[0]), row))
    for name in rows:
        print(f"| {name} | " + " | ".join(
            f"{results[b][name] / results[b][REFERENCE]:.2f}" if name in results[b] else "–"
            for b in installed) + " |")
    if "jax" in results and args.jax_gradients:
        for name in CUSTOM_GRADIENTS:
            if f"{name} custom" in results["jax"]:
                ratio = results["jax"][f"{name} custom"] / results["jax"][f"{name} autodiff"]
                print(f"jax {name}: custom gradients / autodiff = {ratio:.3f}")


if __name__ == "__main__":
    main()
