"""Rejection rules: cheap tests that discard a candidate before (or while) it is trained.

arXiv:2004.02967 §4.2 discards most of the sparse search space cheaply:

- `numerical`: the layer produces NaN/Inf, on random inputs or while training.
- `stability`: an adversarial stress test. Gradient *ascent* on the anchor's
  convolution kernels maximises the gradient norm ‖∂ℓ/∂θ‖₂ of a small batch
  (the paper: up to 100 steps, reject above 1e8). Layers without effective
  normalization let the norm grow multiplicatively with the weights and blow
  past the threshold in a few steps; normalized layers saturate.
  The search stress-tests every anchor (`SearchConfig.stability_anchors`).
- `quality`: a layer whose output is the same for every sample is rejected
  at once (`depends_on_sample`: its accuracy is chance by construction);
  otherwise held-out accuracy after a short training below a threshold on
  *any* anchor (the paper: < 20 % CIFAR-10 accuracy after 100 steps, twice
  chance). Implemented in `evolution.evaluate_candidate`, which trains each
  anchor for `quality_steps`, checks, and continues the same run to the full
  proxy budget only if every anchor passed.

Every rejection is recorded with its reason (`REASONS`).
"""

import dataclasses
import functools
import math

import keras
import numpy as np
import tensorflow as tf

from evonorm_tf.search import compiler, proxy

REASONS = ("numerical", "stability", "quality")


@dataclasses.dataclass
class StabilityConfig:
    """The gradient-norm stress test on one anchor (the paper: up to 100 steps, reject above 1e8)."""

    steps: int = 100
    learning_rate: float = 1.0
    threshold: float = 1e8
    batch_size: int = 16
    anchor: str = "resnet"


def numerically_finite(graph, seed=0, shape=(4, 6, 6, 8), groups=2):
    """Whether the graph and its input gradient are finite on random activations (training mode)."""
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=shape).astype(np.float32))
    v0 = tf.zeros(shape[-1])
    v1 = tf.ones(shape[-1])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y, _ = compiler.graph_forward(graph, x, v0, v1, training=True, groups=groups)
        loss = tf.reduce_sum(y * tf.constant(rng.normal(size=shape).astype(np.float32)))
    gradient = tape.gradient(loss, x)
    finite = bool(tf.reduce_all(tf.math.is_finite(y)))
    if gradient is not None:
        finite = finite and bool(tf.reduce_all(tf.math.is_finite(gradient)))
    return finite


def depends_on_sample(graph, seed=0, shape=(4, 6, 6, 8), groups=2):
    """Whether the graph's output differs between samples of a batch.

    A layer whose output is the same for every sample (a constant, or only
    batch statistics) hides the input from the rest of the network, so its
    accuracy is chance by construction: it is rejected for quality without
    training.
    """
    rng = np.random.default_rng(seed + 1)
    x = rng.normal(size=shape).astype(np.float32)
    v0 = rng.normal(size=shape[-1]).astype(np.float32)
    v1 = rng.normal(1.0, 0.5, size=shape[-1]).astype(np.float32)
    y, _ = compiler.graph_forward(graph, x, v0, v1, training=True, groups=groups)
    y = y.numpy()
    spread = np.nanmax(np.abs(y - y[:1])) if np.all(np.isfinite(y)) else np.inf
    return bool(spread > 1e-6 * (1.0 + np.nanmax(np.abs(y))))


def _conv_kernels(model):
    return [
        variable for variable in model.trainable_variables
        if len(variable.shape) == 4 and "kernel" in variable.path
    ]


def max_gradient_norm(model, images, labels, config):
    """Gradient ascent on conv kernels of `model` to maximise ‖∂ℓ/∂θ‖₂.

    Returns `(largest gradient norm seen, steps run)`; the norm is `inf` if it
    became non-finite. Stops early once the norm exceeds `config.threshold`.
    """
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kernels = _conv_kernels(model)
    variables = model.trainable_variables
    images = tf.constant(images)
    labels = tf.constant(labels)

    def ascent():
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = loss_fn(labels, model(images, training=True))
            gradients = inner.gradient(loss, variables)
            norm = tf.linalg.global_norm([g for g in gradients if g is not None])
        ascent = outer.gradient(norm, kernels)
        if tf.math.is_finite(norm):
            for kernel, direction in zip(kernels, ascent):
                if direction is not None:
                    kernel.assign_add(config.learning_rate
                                      * tf.where(tf.math.is_finite(direction), direction, 0.0))
        return norm

    # One trace per candidate, by design. A `partial` is a new callable each time: TensorFlow counts
    # traces per Python function and would log every candidate's first trace after the fifth as retracing.
    ascent_step = tf.function(functools.partial(ascent))
    worst = 0.0
    for step in range(1, config.steps + 1):
        value = float(ascent_step())
        if not math.isfinite(value):
            return math.inf, step
        worst = max(worst, value)
        if worst > config.threshold:
            return worst, step
    return worst, config.steps


def run_stress_test(name, data, config, width=8, seed=0):
    """`(passed, worst gradient norm, steps run)` of the stress test for norm-act `name`."""
    model = proxy.build_anchor(config.anchor, proxy.norm_act_builder(name),
                               data.train_images.shape[1:], width, seed)
    images = data.train_images[: config.batch_size]
    labels = data.train_labels[: config.batch_size]
    worst, steps = max_gradient_norm(model, images, labels, config)
    return worst <= config.threshold, worst, steps


def stability_test(name, data, config, width=8, seed=0):
    """`(passed, worst gradient norm)` of the stress test for norm-act `name`."""
    passed, worst, _ = run_stress_test(name, data, config, width, seed)
    return passed, worst
