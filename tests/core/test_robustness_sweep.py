"""The adversarial sweep: every kernel path, norm-act, front-end and dtype policy, hard inputs.

For each (kernel path, front-end, dtype policy, norm-act, input case) a
fresh layer runs in training and in inference mode; the output and the
gradients of a linear loss `sum(y * r)` (fixed random `r`) with respect to
the input and every trainable weight must all be finite. The sweep prints a
summary:

    adversarial sweep: 3960 cases (...), non-finite outputs: 0, non-finite gradients: 0

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

import hard_inputs
from evonorm_tf import kernels
from layer_cases import FRONT_ENDS, GROUPED, NAMES, make_layer

PATHS = ("cpu", "portable", "reference")
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
CASES = hard_inputs.SWEEP_CASES
#: The cases of extreme values, run on every kernel path in the default suite.
SCALE_CASES = hard_inputs.SCALE_CASES


def _policy(front_end, name):
    return tf_keras.mixed_precision.Policy(name) if front_end == "tf_keras" else keras.DTypePolicy(name)


def _finite(tensor):
    return bool(np.all(np.isfinite(tf.cast(tensor, tf.float32).numpy())))


def run_sweep(paths=PATHS, front_ends=tuple(FRONT_ENDS), policies=POLICIES, names=NAMES, cases=CASES):
    """Runs the sweep; returns `(cases tried, [non-finite outputs], [non-finite gradients])`."""
    tried, bad_outputs, bad_gradients = 0, [], []
    for path in paths:
        for front_end in front_ends:
            for policy_name in policies:
                with kernels.use(path):
                    result = _sweep_part(path, front_end, policy_name, names, cases)
                tried += result[0]
                bad_outputs += result[1]
                bad_gradients += result[2]
    return tried, bad_outputs, bad_gradients


def _sweep_part(path, front_end, policy_name, names, cases):
    tried, bad_outputs, bad_gradients = 0, [], []
    compute_dtype = _policy(front_end, policy_name).compute_dtype
    for name in names:
        for case in cases:
            rng = np.random.default_rng([len(name), len(case), len(policy_name)])
            x, groups = hard_inputs.sweep_input(case, rng, compute_dtype)
            layer = make_layer(front_end, name, groups=groups if name in GROUPED else None,
                               dtype=_policy(front_end, policy_name))
            inputs = tf.constant(x, dtype=compute_dtype)
            weights = tf.constant(rng.normal(0.0, 1.0, x.shape), tf.float32)
            for training in (True, False):
                label = f"{path}/{front_end}/{policy_name}/{name}/{case}/training={training}"
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


def _check(result, scope):
    tried, bad_outputs, bad_gradients = result
    print("\n" + _summary(tried, bad_outputs, bad_gradients, scope))
    for label in bad_outputs + bad_gradients:
        print("  non-finite:", label)
    assert not bad_outputs, f"non-finite outputs: {bad_outputs[:20]}"
    assert not bad_gradients, f"non-finite gradients: {bad_gradients[:20]}"


@pytest.mark.parametrize("policy", POLICIES)
def test_sweep_tf_keras(policy):
    """CI share: the cpu path (the default on CPU), tf_keras (Model Garden's), every case but 4096 channels."""
    cases = tuple(case for case in CASES if case != "channels_4096")
    result = run_sweep(paths=("cpu",), front_ends=("tf_keras",), policies=(policy,), cases=cases)
    assert result[0] == len(NAMES) * len(cases) * 2
    _check(result, f"cpu path, tf_keras, {policy}, {len(NAMES)} norm-acts x {len(cases)} inputs")


@pytest.mark.parametrize("path", ("portable", "reference"))
def test_scale_sweep_other_paths(path):
    """CI share: the extreme-value cases on the portable and reference paths, tf_keras, every policy."""
    result = run_sweep(paths=(path,), front_ends=("tf_keras",), cases=SCALE_CASES)
    assert result[0] == len(POLICIES) * len(NAMES) * len(SCALE_CASES) * 2
    _check(result, f"{path} path, tf_keras, {len(POLICIES)} dtype policies x {len(NAMES)} norm-acts x "
                   f"{len(SCALE_CASES)} inputs")


@pytest.mark.slow
def test_full_adversarial_sweep():
    result = run_sweep()
    assert result[0] == len(PATHS) * len(FRONT_ENDS) * len(POLICIES) * len(NAMES) * len(CASES) * 2
    _check(result, _full_scope())


def _full_scope():
    return (f"{len(PATHS)} kernel paths x {len(FRONT_ENDS)} front-ends x {len(POLICIES)} dtype policies x "
            f"{len(NAMES)} norm-acts x {len(CASES)} inputs")


def main():
    """Runs the whole sweep one (path, front-end, policy) at a time, printing each part, then the summary."""
    import time

    total = [0, [], []]
    for path in PATHS:
        for front_end in ("tf_keras", "keras3"):
            for policy in POLICIES:
                start = time.time()
                tried, bad_outputs, bad_gradients = run_sweep(paths=(path,), front_ends=(front_end,),
                                                              policies=(policy,))
                total[0] += tried
                total[1] += bad_outputs
                total[2] += bad_gradients
                print(f"{path} {front_end} {policy}: {tried} cases, non-finite outputs {len(bad_outputs)}, "
                      f"gradients {len(bad_gradients)} ({time.time() - start:.0f}s)", flush=True)
                for label in bad_outputs:
                    print("  OUT", label, flush=True)
                for label in bad_gradients:
                    print("  GRAD", label, flush=True)
    print(_summary(*total, _full_scope()), flush=True)


if __name__ == "__main__":
    # python tests/core/test_robustness_sweep.py  (from the repository root, PYTHONPATH=.:tests)
    import conftest  # noqa: F401  (the test set-up: quiet logs, two logical CPUs)

    main()
