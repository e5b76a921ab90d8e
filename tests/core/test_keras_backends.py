"""The Keras 3 layer tests (`tests/backends`) under JAX and PyTorch, one process each.

Keras fixes its backend per process (`KERAS_BACKEND`), so each backend runs
the group in its own pytest subprocess; the default suite runs the same group
on TensorFlow directly. JAX and PyTorch come with the `test` extra.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("backend", ("jax", "torch"))
def test_layer_tests_pass_on_backend(backend):
    assert importlib.util.find_spec(backend) is not None, f"{backend} is missing: pip install -e '.[test]'"
    environment = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    environment.pop("XLA_FLAGS", None)  # tests/conftest.py sets JAX's devices
    command = [sys.executable, "-m", "pytest", "tests/backends", "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=REPOSITORY,
                            env=environment)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert " passed" in summary and "failed" not in summary, summary
