"""bench/gpu.py runs end to end (here on CPU, in its tiny configuration) and prints both tables."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_gpu_bench_runs_tiny_and_prints_both_tables():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu.py"), "--tiny", "--policy", "float32"],
                            capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "# device: CPU only" in out
    assert "## layer forward+backward" in out and "## pre-activation ResNet-50 train step" in out
    for norm in ("bn_relu", "evonorm_b0", "evonorm_s0"):
        assert sum(line.startswith(f"| {norm} |") or f"| {norm} |" in line for line in out.splitlines()) >= 3


def test_gpu_bench_refuses_an_unknown_policy():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu.py"), "--policy", "float8"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 2
    assert "received 'float8'" in result.stderr and "Traceback" not in result.stderr
