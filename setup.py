"""evonorm_tf: EvoNorm normalization-activation layers for TensorFlow, Keras 3 and tf_keras.

    pip install -e .            # the layer library (TensorFlow, Keras 3, tf_keras)
    pip install -e '.[demo]'    # plus what the main job needs (python -m evonorm_tf.demo)
    pip install -e '.[garden]'  # Model Garden backbones, experiments, tpu_scripts
    pip install -e '.[all]'     # every extension: garden, gan, search, ray, plots
    pip install -e '.[jax]'     # Keras 3 layers on the JAX backend (KERAS_BACKEND=jax)
    pip install -e '.[torch]'   # Keras 3 layers on the PyTorch backend (KERAS_BACKEND=torch)
    pip install -e '.[test]'    # all of it but PyTorch, plus pytest and pytest-xdist
"""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _read(name):
    path = os.path.join(HERE, name)
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _version():
    # Read, not imported: importing the package would import TensorFlow.
    match = re.search(r'^__version__ = "([^"]+)"', _read(os.path.join("evonorm_tf", "__init__.py")), re.M)
    if not match:
        raise RuntimeError("__version__ not found in evonorm_tf/__init__.py")
    return match.group(1)


GARDEN = [
    # evonorm_tf.modeling, .configs, .gan (Orbit task), .data, tpu_scripts/:
    # Model Garden 2.20 (with Orbit), TFDS, COCO tools, the drawn shapes data.
    "tf-models-official==2.20.0",
    "tensorflow-datasets>=4.9",
    "pycocotools>=2.0.6",
    "pillow>=10",
    "pyyaml>=6",
]
PLOTS = ["matplotlib>=3.7"]
EXTRAS = {
    "garden": GARDEN,
    # The BigGAN task and its FID (a matrix square root).
    "gan": GARDEN + ["scipy>=1.11"],
    # evonorm_tf.search: symbolic search space and evolution; digits and TFDS proxies, plots.
    "search": ["pyglove>=0.4.4", "scikit-learn>=1.3", "tensorflow-datasets>=4.9"] + PLOTS,
    # `python -m evonorm_tf.search ... --ray-address`: workers on a Ray cluster.
    "ray": ["ray>=2.9"],
    "plots": PLOTS,
    # The main job, `python -m evonorm_tf.demo`: bundled digits data and the PNG report.
    "demo": GARDEN + ["scikit-learn>=1.3"] + PLOTS,
    # The Keras 3 layers on Keras's JAX backend (CPU; a GPU/TPU jaxlib as JAX documents).
    "jax": ["jax>=0.4.30"],
}
EXTRAS["all"] = sorted({requirement for extra in EXTRAS.values() for requirement in extra})
# The Keras 3 layers on Keras's PyTorch backend (any torch >= 2.1). Its own extra, outside
# `all`: PyPI's default torch wheel brings CUDA libraries (about 5 GB installed).
EXTRAS["torch"] = ["torch>=2.1"]
# The tests run the Keras 3 layers on TensorFlow, JAX and PyTorch. torch is pinned to 2.13 here
# so that where the package index offers its CPU-only build (torch 2.13.0+cpu, 190 MB, no CUDA
# libraries) the test environment takes it.
EXTRAS["test"] = EXTRAS["all"] + ["torch==2.13.*", "pytest>=8", "pytest-xdist>=3"]

setup(
    name="evonorm_tf",
    version=_version(),
    description=(
        "EvoNorm normalization-activation layers (arXiv:2004.02967) for TensorFlow: "
        "Keras 3 and tf_keras / Model Garden"
    ),
    long_description=_read("README.md"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["evonorm_tf", "evonorm_tf.*"]),
    # The native ops' source, compiled on first use (evonorm_tf/kernels/native.py).
    package_data={"evonorm_tf.kernels": ["native_ops.cc"]},
    python_requires=">=3.10",
    install_requires=[
        # The layer library: what `import evonorm_tf` needs, nothing more. TF 2.20
        # ships Keras 3 as `keras`; tf_keras 2.20 is the Keras 2 that Model Garden uses.
        "tensorflow~=2.20.0",
        "tf-keras~=2.20.0",
        "keras>=3.10",
        "numpy>=1.26",
        "absl-py>=1.0",
    ],
    extras_require=EXTRAS,
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
