"""Test setup: quiet TensorFlow logs, two logical CPU devices for distribution tests, and
the same random seeds at the start of every test."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if os.environ.get("KERAS_BACKEND") == "jax":
    # Two CPU devices for the keras.distribution tests, as the two logical TF CPUs below.
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

# The test folders (core, garden, gan, search, neighbours, project) share the
# helpers at this level: the float64 reference, layer cases, model checks.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402,I001  (before TensorFlow: see evonorm_tf/__init__.py)
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

# Two logical CPU devices let MirroredStrategy tests run on one physical CPU.
# This must happen before TensorFlow initialises its devices.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy over the two logical CPUs for every test of the process.

    Each strategy numbers its collective ops from the same keys, and the
    process keeps the first group's shapes under them: a second strategy's
    all-reduce of another shape then fails ("Shape mismatch in the collective
    instance"). Sharing one strategy keeps the keys unique.
    """
    devices = [device.name for device in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "two logical CPUs are configured above"
    return tf.distribute.MirroredStrategy(devices)


@pytest.fixture(autouse=True)
def seeded_random_state():
    """Every test starts from the same Python, NumPy, TensorFlow and Keras seeds.

    Unseeded initializers and draws then give the same values whichever tests
    ran before in the same worker, so a test's outcome does not depend on the
    order or the distribution of tests over workers.
    """
    keras.utils.set_random_seed(0)
    tf_keras.utils.set_random_seed(0)
