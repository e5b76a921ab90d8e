"""evonorm_tf: EvoNorm normalization-activation layers for TensorFlow, Keras 3 and tf_keras.

    pip install -e .            # the package and the main job (python -m evonorm_tf.demo)
    pip install -e '.[test]'    # plus pytest, pytest-xdist and scipy for the tests
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
    package_data={"evonorm_tf": ["configs/*.yaml", "configs/*/*.yaml"]},
    python_requires=">=3.10",
    install_requires=[
        # One stack that works together: Model Garden 2.20 is built for TF and
        # tf_keras 2.20; TF 2.20 ships Keras 3 as `keras`.
        "tensorflow~=2.20.0",
        "tf-keras~=2.20.0",
        "keras>=3.10",
        "tf-models-official==2.20.0",
        "tensorflow-datasets>=4.9",
        "absl-py>=1.0",
        "numpy>=1.26",
        # The main job: bundled digits data and the PNG report.
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        # evonorm_tf.search: symbolic search space and evolution.
        "pyglove>=0.4.4",
        # evonorm_tf.data.shapes_coco: drawn COCO-format detection data.
        "pillow>=10",
        "pycocotools>=2.0.6",
        # evonorm_tf.gan.evaluation: the matrix square root of FID.
        "scipy>=1.11",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-xdist>=3",
            "scikit-learn>=1.3",
            "scipy>=1.11",
        ],
        # `python -m evonorm_tf.search ... --ray-address`: workers on a Ray cluster.
        "search-ray": ["ray>=2.9"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
