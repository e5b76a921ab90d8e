"""A distribution named `tensorflow` whose only content is a requirement on `tensorflow-tpu`.

PyPI's TPU build of TensorFlow is the distribution `tensorflow-tpu`; it installs the
same `tensorflow` package as the plain wheel. Whatever requires `tensorflow`
(this project's setup.py, tf-models-official, tf-keras, tensorflow-text) would
make pip install the plain wheel over it, and the plain wheel does not see TPUs.
Installed together with `tensorflow-tpu`, this distribution satisfies those
requirements, so pip keeps the TPU build:

    pip install tensorflow-tpu==2.20.0 ./tpu_scripts/tensorflow_tpu_alias -e .

It ships no files: uninstalling it leaves `tensorflow-tpu` in place.
"""

from setuptools import setup

TENSORFLOW_VERSION = "2.20.0"

setup(
    name="tensorflow",
    version=TENSORFLOW_VERSION,
    description=f"Stands for tensorflow-tpu=={TENSORFLOW_VERSION} where `tensorflow` is required",
    py_modules=[],
    install_requires=[f"tensorflow-tpu=={TENSORFLOW_VERSION}"],
)
