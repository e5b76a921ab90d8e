"""The adversarial sweep: every norm-act, both front-ends, every dtype policy, hard inputs.

For each (front-end, dtype policy, norm-act, input case) a fresh layer runs
in training and in inference mode; the output and the gradients of a linear
loss `sum(y * r)` (fixed random `r`) with respect to the input and every
trainable weight must be finite, except for the cases of `KNOWN_NON_FINITE`.
The sweep prints a summary:

    adversarial sweep: 1320 cases (...), non-finite outputs: N, non-finite gradients: M

Input cases: zeros, a constant, values of scale 1e30 (both signs), a
constant -1e30, values of scale 1e-30, mean 1e4 (std 1), batch 1, 1x1
spatial, prime spatial sizes (7x5), 4096 channels. Inputs are given in the
policy's compute dtype; float16 cannot hold 1e30 (its largest value is
65504), so under mixed_float16 the two 1e30 cases use 1e4 instead (and 1e-30
rounds to zero: the zeros case again). docs/robustness.md quotes the summary.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from layer_cases import FRONT_ENDS, GROUPED, NAMES, make_layer

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
FLOAT16_LARGEST_SCALE = 1e4


def _case_input(case, rng, compute_dtype):
    """`(channels_last input as float64, groups for grouped layers)` of one case."""
    large = FLOAT16_LARGEST_SCALE if compute_dtype == "float16" else 1e30
    shape, groups = (3, 4, 4, 8), 4
    if case == "zeros":
        x = np.zeros(shape)
    elif case == "constant":
        x = np.full(shape, 2.5)
    elif case == "scale_1e30":
        x = rng.normal(0.0, 1.0, shape) * large
    elif case == "constant_minus_1e30":
        x = np.full(shape, -large)
    elif case == "scale_1e-30":
        x = rng.normal(0.0, 1.0, shape) * 1e-30
    elif case == "mean_1e4":
        x = rng.normal(1e4, 1.0, shape)
    elif case == "batch_1":
        x = rng.normal(0.5, 1.0, (1, 4, 4, 8))
    elif case == "spatial_1x1":
        x = rng.normal(0.5, 1.0, (4, 1, 1, 8))
    elif case == "spatial_prime_7x5":
        x = rng.normal(0.5, 1.0, (2, 7, 5, 8))
    elif case == "channels_4096":
        x, groups = rng.normal(0.5, 1.0, (2, 3, 3, 4096)), 32
    else:
        raise ValueError(case)
    return x, groups


CASES = ("zeros", "constant", "scale_1e30", "constant_minus_1e30", "scale_1e-30", "mean_1e4",
         "batch_1", "spatial_1x1", "spatial_prime_7x5", "channels_4096")


def _policy(front_end, name):
    return tf_keras.mixed_precision.Policy(name) if front_end == "tf_keras" else keras.DTypePolicy(name)


def _finite(tensor):
    return bool(np.all(np.isfinite(tf.cast(tensor, tf.float32).numpy())))


def run_sweep(front_ends=tuple(FRONT_ENDS), policies=POLICIES, names=NAMES, cases=CASES):
    """Runs the sweep; returns `(cases tried, [non-finite outputs], [non-finite gradients])`."""
    tried, bad_outputs, bad_gradients = 0, [], []
    for front_end in front_ends:
        for policy_name in policies:
            compute_dtype = _policy(front_end, policy_name).compute_dtype
            for name in names:
                for case in cases:
                    rng = np.random.default_rng([len(name), len(case), len(policy_name)])
                    x, groups = _case_input(case, rng, compute_dtype)
                    layer = make_layer(front_end, name, groups=groups if name in GROUPED else None,
                                       dtype=_policy(front_end, policy_name))
                    inputs = tf.constant(x, dtype=compute_dtype)
                    weights = tf.constant(rng.normal(0.0, 1.0, x.shape), tf.float32)
                    for training in (True, False):
                        label = f"{front_end}/{policy_name}/{name}/{case}/training={training}"
                        tried += 1
                        with tf.GradientTape() as tape:
                            tape.watch(inputs)
                            y = layer(inputs, training=training)
                            loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
                        gradients = tape.gradient(loss, [inputs] + layer.trainable_weights)
                        if not _finite(y):
                            bad_outputs.append(label)
                        if any(g is None or not _finite(g) for g in gradients):
                            bad_gradients.append(label)
    return tried, bad_outputs, bad_gradients


def _summary(tried, bad_outputs, bad_gradients, scope):
    return (f"adversarial sweep: {tried} cases ({scope}; training and inference), "
            f"non-finite outputs: {len(bad_outputs)}, non-finite gradients: {len(bad_gradients)}")


# Non-finite values the sweep finds today, as (policy, norm-act, case), any front-end and mode
# (docs/robustness.md): float32 cannot hold the square of 1e30 (the gradients of these
# EvoNorms' variances overflow), and float16 cannot hold the square of 1e4 (the statistics of
# these EvoNorms overflow under mixed_float16). A fix removes entries; a new failure fails.
KNOWN_NON_FINITE = frozenset(
    [(policy, name, case) for policy in ("float32", "mixed_bfloat16")
     for name, case in (("evonorm_b0", "scale_1e30"), ("evonorm_b2", "constant_minus_1e30"),
                        ("evonorm_s0", "scale_1e30"))]
    + [("mixed_float16", name, "constant_minus_1e30") for name in ("evonorm_b0", "evonorm_b1")]
    + [("mixed_float16", name, "mean_1e4") for name in ("evonorm_b2", "evonorm_s0", "evonorm_s1")]
)


def _unexpected(labels):
    """Labels `front_end/policy/name/case/training=...` not in `KNOWN_NON_FINITE`."""
    return [label for label in labels if tuple(label.split("/")[1:4]) not in KNOWN_NON_FINITE]


def _check(result, scope):
    tried, bad_outputs, bad_gradients = result
    print("\n" + _summary(tried, bad_outputs, bad_gradients, scope))
    for label in bad_outputs + bad_gradients:
        print("  non-finite:", label)
    assert not _unexpected(bad_outputs), f"non-finite outputs: {_unexpected(bad_outputs)[:20]}"
    assert not _unexpected(bad_gradients), f"non-finite gradients: {_unexpected(bad_gradients)[:20]}"


@pytest.mark.parametrize("policy", POLICIES)
def test_sweep_tf_keras(policy):
    """CI share of the sweep: the tf_keras front-end (Model Garden's), every case but 4096 channels."""
    cases = tuple(case for case in CASES if case != "channels_4096")
    result = run_sweep(front_ends=("tf_keras",), policies=(policy,), cases=cases)
    assert result[0] == len(NAMES) * len(cases) * 2
    _check(result, f"tf_keras, {policy}, {len(NAMES)} norm-acts x {len(cases)} inputs")


@pytest.mark.slow
def test_full_adversarial_sweep():
    result = run_sweep()
    assert result[0] == len(FRONT_ENDS) * len(POLICIES) * len(NAMES) * len(CASES) * 2
    _check(result, f"{len(FRONT_ENDS)} front-ends x {len(POLICIES)} dtype policies x {len(NAMES)} "
                   f"norm-acts x {len(CASES)} inputs")


def main():
    """Runs the whole sweep one (front-end, policy) at a time, printing each part's summary."""
    import time

    total = [0, [], []]
    for front_end in ("tf_keras", "keras3"):
        for policy in POLICIES:
            start = time.time()
            tried, bad_outputs, bad_gradients = run_sweep(front_ends=(front_end,), policies=(policy,))
            total[0] += tried
            total[1] += bad_outputs
            total[2] += bad_gradients
            print(f"{front_end} {policy}: {tried} cases, non-finite outputs {len(bad_outputs)}, "
                  f"gradients {len(bad_gradients)} ({time.time() - start:.0f}s)", flush=True)
            for label in bad_outputs:
                print("  OUT", label, flush=True)
            for label in bad_gradients:
                print("  GRAD", label, flush=True)
    print("TOTAL", total[0], len(total[1]), len(total[2]), flush=True)


if __name__ == "__main__":
    # python tests/core/test_robustness_sweep.py  (from the repository root, PYTHONPATH=.:tests)
    import conftest  # noqa: F401  (the test set-up: quiet logs, two logical CPUs)

    main()
