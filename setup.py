"""evonorm_tf: EvoNorm normalization-activation layers for TensorFlow, Keras 3 and tf_keras."""

from setuptools import find_packages, setup

setup(
    name="evonorm_tf",
    version="0.1.0",
    description="EvoNorm normalization-activation layers for TensorFlow (Keras 3 and tf_keras / Model Garden)",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["evonorm_tf", "evonorm_tf.*"]),
    python_requires=">=3.10",
    install_requires=[
        # The stack that works together: Model Garden 2.20 pins TF/tf_keras 2.20.
        "tensorflow~=2.20.0",
        "tf-keras~=2.20.0",
        "keras>=3.10",
        "tf-models-official==2.20.0",
        "tensorflow-datasets>=4.9",
        "absl-py>=1.0",
        "numpy>=1.26",
        "matplotlib>=3.7",
        "scikit-learn>=1.3",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3", "scipy>=1.11"],
    },
    license="Apache-2.0",
)
