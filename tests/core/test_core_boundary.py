"""The core imports no extension: dependencies point from the extensions to the core.

Core: the layer library (registry, arguments, statistics, formulas, kernels,
layers, factories, Shadow BN). Extensions: Model Garden modeling and configs,
BigGAN, the layer search, analysis, data, the demo. They register into the
core when imported; the core never imports them, not even inside a function.
"""

import ast
import os
import subprocess
import sys

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "evonorm_tf")
EXTENSIONS = ("analysis", "command_line", "configs", "data", "demo", "demo_report", "gan", "modeling", "neighbours", "search")
# What the core may import besides itself and the standard library.
CORE_THIRD_PARTY = {"tensorflow", "keras", "tf_keras", "numpy", "absl"}


def _core_files():
    for root, dirs, files in os.walk(PACKAGE):
        relative = os.path.relpath(root, PACKAGE)
        top = relative.split(os.sep)[0]
        if top in EXTENSIONS:
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if d not in EXTENSIONS and d != "__pycache__"]
        for name in files:
            if name.endswith(".py") and not (relative == "." and name[:-3] in EXTENSIONS):
                yield os.path.join(root, name)


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):  # every import, at module level or inside a function
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module
            if node.module == "evonorm_tf":
                yield from (f"evonorm_tf.{alias.name}" for alias in node.names)


def test_the_core_is_found():
    names = {os.path.relpath(p, PACKAGE) for p in _core_files()}
    assert {"registry.py", "factory.py", "formulas.py", "norm_acts.py", "layers.py"} <= names
    assert not any(n.startswith(("search", "gan", "modeling")) for n in names)


@pytest.mark.parametrize("path", sorted(_core_files()), ids=lambda p: os.path.relpath(p, PACKAGE))
def test_core_module_imports_no_extension(path):
    stdlib = set(sys.stdlib_module_names)
    for module in _imports(path):
        top = module.split(".")[0]
        if top == "evonorm_tf":
            parts = module.split(".")
            assert len(parts) == 1 or parts[1] not in EXTENSIONS, f"{path} imports the extension {module}"
        else:
            assert top in stdlib or top in CORE_THIRD_PARTY, f"{path} imports {module}"


def test_importing_the_package_loads_no_extension():
    # (TensorFlow and Keras themselves import SciPy, scikit-learn and matplotlib when installed.)
    code = (
        "import sys, evonorm_tf, evonorm_tf.tf_keras\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('official', 'orbit', 'pyglove', 'tensorflow_datasets', 'pycocotools', 'ray')"
        " or m.split('.')[:2] in [['evonorm_tf', e] for e in %r])\n"
        "print(loaded)\n" % (EXTENSIONS,)
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_extensions_do_not_import_each_other_in_a_cycle():
    # The BigGAN models (gan) know nothing of the Model Garden configs; the configs import them.
    for name in sorted(os.listdir(os.path.join(PACKAGE, "gan"))):
        if name.endswith(".py"):
            for module in _imports(os.path.join(PACKAGE, "gan", name)):
                assert not module.startswith("evonorm_tf.configs"), f"gan/{name} imports {module}"
