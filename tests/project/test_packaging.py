"""Packaging, docs and CI: README examples run, set-up commands, setup.py, BUILD and .ci/run agree."""

import ast
import os
import re
import subprocess
import sys
import types

import pytest

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Top-level import name → the distribution that provides it (setup.py spelling).
DISTRIBUTION_OF_MODULE = {
    "absl": "absl-py",
    "keras": "keras",
    "matplotlib": "matplotlib",
    "numpy": "numpy",
    "official": "tf-models-official",
    "orbit": "tf-models-official",  # Orbit ships inside tf-models-official
    "gin": "tf-models-official",  # gin-config, a requirement of tf-models-official
    "PIL": "pillow",
    "pycocotools": "pycocotools",
    "pyglove": "pyglove",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "tensorflow": "tensorflow",
    "tensorflow_datasets": "tensorflow-datasets",
    "tf_keras": "tf-keras",
    "ray": "ray",
    "yaml": "pyyaml",
    "jax": "jax",
    "torch": "torch",
}
# Imports inside `try: ... except ImportError` are optional and need no pin
# (e.g. ai_edge_litert and tqdm, which tf-models-official and
# tensorflow-datasets install anyway).


def _read(*parts):
    with open(os.path.join(REPOSITORY, *parts), encoding="utf-8") as handle:
        return handle.read()


def _fenced_blocks(markdown, language):
    return re.findall(rf"^```{language}\n(.*?)^```", markdown, flags=re.S | re.M)


def _section(markdown, title):
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, flags=re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def _setup_metadata():
    """The keyword arguments of setup.py's `setup(...)` call, read by running setup.py with a stand-in."""
    captured = {}
    stand_in = types.ModuleType("setuptools")
    stand_in.setup = lambda **kwargs: captured.update(kwargs)
    stand_in.find_packages = lambda **kwargs: []
    original = sys.modules.get("setuptools")
    sys.modules["setuptools"] = stand_in
    try:
        exec(compile(_read("setup.py"), "setup.py", "exec"), {"__file__": os.path.join(REPOSITORY, "setup.py"),
                                                              "__name__": "__main__"})
    finally:
        if original is None:
            del sys.modules["setuptools"]
        else:
            sys.modules["setuptools"] = original
    return captured


def _requirement_name(requirement):
    return re.split(r"[<>=~!\[; ]", requirement, maxsplit=1)[0].lower()


def _setup_commands():
    return [block.strip() for block in _fenced_blocks(_section(_read("README.md"), "Set-up on a fresh machine"), "bash")]


# -- README ---------------------------------------------------------------------


PYTHON_BLOCKS = _fenced_blocks(_read("README.md"), "python")


def test_readme_has_a_keras3_and_a_tf_keras_example():
    assert len(PYTHON_BLOCKS) >= 2
    assert any("import keras\n" in block for block in PYTHON_BLOCKS)
    assert any("import tf_keras\n" in block for block in PYTHON_BLOCKS)
    for block in PYTHON_BLOCKS:
        assert len(block.strip().splitlines()) <= 20, "README examples should stay short"


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_example_runs(index):
    code = PYTHON_BLOCKS[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "readme_example"})


def test_readme_has_exactly_two_one_line_setup_commands():
    commands = _setup_commands()
    assert len(commands) == 2, commands
    for command in commands:
        assert "\n" not in command, f"set-up command spans several lines: {command!r}"
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install -e ")
    main_job, tests = commands
    assert main_job.endswith(".venv/bin/python -m evonorm_tf.demo")
    assert "pip install -e '.[test]'" in tests and ".venv/bin/python -m pytest" in tests


def test_readme_documents_slow_tests_benchmarks_and_placeholders():
    readme = _read("README.md")
    assert "pytest -m slow" in readme
    assert "bench/layers.py" in readme
    _section(readme, "Benchmarks")
    _section(readme, "Results")
    # Every benchmark script the README names exists.
    for script in re.findall(r"bench/\w+\.py", readme):
        assert os.path.exists(os.path.join(REPOSITORY, script)), script
    # Every measurement file the README or the docs cite is in the repository.
    docs = [readme] + [_read("docs", name) for name in sorted(os.listdir(os.path.join(REPOSITORY, "docs")))
                       if name.endswith(".md")]
    cited = {path for text in docs for path in re.findall(r"(?:bench|docs)/results/[\w.\-]+\.(?:txt|jsonl|json|csv)", text)}
    assert cited, "the README and docs cite no measurement files"
    for path in sorted(cited):
        assert os.path.exists(os.path.join(REPOSITORY, path)), path
    # The layer table is the registry's.
    from evonorm_tf import registry

    assert registry.layer_table() in _section(readme, "Layers")


# -- .ci/run --------------------------------------------------------------------


def test_ci_script_runs_the_readme_test_command_verbatim():
    path = os.path.join(REPOSITORY, ".ci", "run")
    assert os.access(path, os.X_OK), ".ci/run must be executable"
    script = _read(".ci", "run")
    assert script.startswith("#!/usr/bin/env bash\n")
    test_command = _setup_commands()[1]
    assert test_command in script
    assert "set -euo pipefail" in script
    assert re.search(r'"\$status" -eq 5', script), "pytest exit code 5 must be reported as a failure"
    assert 'exit "$status"' in script
    subprocess.run(["bash", "-n", path], check=True)


# -- setup.py -------------------------------------------------------------------


def test_setup_pins_the_stack_and_keeps_the_core_light():
    metadata = _setup_metadata()
    assert metadata["name"] == "evonorm_tf"
    assert metadata["python_requires"] == ">=3.10"
    requires = set(metadata["install_requires"])
    assert {"tensorflow~=2.20.0", "tf-keras~=2.20.0"} <= requires
    # The layer library alone: no Model Garden, search, plotting or data packages.
    assert {_requirement_name(r) for r in requires} == {"tensorflow", "tf-keras", "keras", "numpy", "absl-py"}
    extras = metadata["extras_require"]
    assert "tf-models-official==2.20.0" in extras["garden"]
    # PyTorch (with its CUDA libraries) is its own extra, outside `all`; the tests take its CPU build.
    assert set(extras["all"]) == {r for name, extra in extras.items()
                                  if name not in ("all", "test", "torch") for r in extra}
    test_names = {_requirement_name(r) for r in extras["test"]}
    assert {"pytest", "pytest-xdist", "scikit-learn", "scipy", "ray", "pyglove", "jax", "torch"} <= test_names
    assert {_requirement_name(r) for r in extras["torch"]} == {"torch"}


def _catches_import_error(handler):
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(getattr(name, "id", None) in ("ImportError", "ModuleNotFoundError") for name in names)


def _third_party_imports(directory):
    """Top-level module names imported by the .py files under `directory`, with where."""
    found = {}
    base = os.path.join(REPOSITORY, directory)
    walk = [(os.path.dirname(base), None, [directory.split("/")[-1] + ".py"])] if os.path.isfile(base + ".py") \
        else os.walk(base)
    for root, _, files in walk:
        for file_name in files:
            if not file_name.endswith(".py"):
                continue
            path = os.path.join(root, file_name)
            tree = ast.parse(_read(path))
            guarded = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.Try)
                       and any(_catches_import_error(handler) for handler in node.handlers)
                       for statement in node.body for inner in ast.walk(statement)}
            for node in ast.walk(tree):
                if id(node) in guarded:
                    continue
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top not in sys.stdlib_module_names and top != "evonorm_tf":
                        found.setdefault(top, os.path.relpath(path, REPOSITORY))
    return found


# Which extras each part of the package may rely on (the core: install_requires only).
EXTRAS_OF_AREA = {
    "evonorm_tf/analysis": ("garden", "gan", "plots"),
    "evonorm_tf/command_line": ("garden",),
    "evonorm_tf/configs": ("garden",),
    "evonorm_tf/data": ("garden", "demo"),
    "evonorm_tf/demo": ("demo",),
    "evonorm_tf/demo_report": ("demo",),
    "evonorm_tf/gan": ("gan",),
    "evonorm_tf/modeling": ("garden",),
    "evonorm_tf/neighbours": ("garden",),
    "evonorm_tf/search": ("search", "ray"),
    "tpu_scripts": ("garden",),
    "bench": ("garden", "jax", "torch"),
    "tests": ("test",),
}


def test_every_imported_package_is_declared_by_its_area():
    metadata = _setup_metadata()
    core = {_requirement_name(r) for r in metadata["install_requires"]}
    extras = {name: {_requirement_name(r) for r in requirements}
              for name, requirements in metadata["extras_require"].items()}
    areas = list(EXTRAS_OF_AREA.items()) + [("evonorm_tf", ())]
    for area, extra_names in areas:
        allowed = core.union(*(extras[name] for name in extra_names))
        for module, where in _third_party_imports(area).items():
            if area == "evonorm_tf" and any(where.startswith(other + os.sep) or where == other + ".py"
                                            for other, _ in EXTRAS_OF_AREA.items()):
                continue
            local = os.path.exists(os.path.join(REPOSITORY, area, module + ".py"))
            if local or (area == "tests" and module == "pytest") or where.endswith(os.path.join("tensorflow_tpu_alias", "setup.py")):
                continue
            assert module in DISTRIBUTION_OF_MODULE, f"{where} imports {module!r}: add it to setup.py and here"
            assert DISTRIBUTION_OF_MODULE[module] in allowed, (
                f"{where} imports {module!r}, but neither install_requires nor the extras "
                f"{extra_names} of {area} require {DISTRIBUTION_OF_MODULE[module]!r}")


def test_version_matches_setup():
    import evonorm_tf

    completed = subprocess.run([sys.executable, "setup.py", "--version"], cwd=REPOSITORY,
                               capture_output=True, text=True, timeout=60, check=True)
    assert completed.stdout.strip().splitlines()[-1] == evonorm_tf.__version__


# -- BUILD ----------------------------------------------------------------------


def test_build_globs_every_subpackage_and_requires_the_stack():
    build = _read("BUILD")
    globbed = set(re.findall(r'glob\(\["(evonorm_tf(?:/\w+)*)/\*\.py"\]', build))
    packages = {os.path.relpath(root, REPOSITORY) for root, _, files in
                os.walk(os.path.join(REPOSITORY, "evonorm_tf")) if "__init__.py" in files}
    assert packages <= globbed, f"BUILD globs {sorted(globbed)}, packages are {sorted(packages)}"
    required = set(re.findall(r'requirement\("([\w.-]+)"\)', build))
    metadata = _setup_metadata()
    for requirement in metadata["install_requires"] + metadata["extras_require"]["test"]:
        assert _requirement_name(requirement) in required, requirement
    # One py_test per test file: generated over this glob, run through pytest_main.
    assert 'for test_file in glob(["tests/**/test_*.py"])' in build
    assert 'main = "tests/pytest_main.py"' in build
    assert os.path.exists(os.path.join(REPOSITORY, "tests", "pytest_main.py"))


def test_native_ops_source_ships_with_the_package():
    """The C++ source that `evonorm_tf.kernels.native` compiles on first use is in the wheel and the Bazel target."""
    assert os.path.exists(os.path.join(REPOSITORY, "evonorm_tf", "kernels", "native_ops.cc"))
    assert _setup_metadata()["package_data"] == {"evonorm_tf.kernels": ["native_ops.cc"]}
    assert 'data = ["evonorm_tf/kernels/native_ops.cc"]' in _read("BUILD")


def test_bazel_module_pins_every_requirement():
    module = _read("MODULE.bazel")
    assert 'requirements_lock = "//:requirements_lock.txt"' in module and 'hub_name = "pip"' in module
    pinned = {_requirement_name(line) for line in _read("requirements_lock.txt").splitlines()
              if line and not line.startswith("#")}
    pinned = {name.replace("_", "-") for name in pinned}
    metadata = _setup_metadata()
    for requirement in metadata["install_requires"] + metadata["extras_require"]["test"]:
        assert _requirement_name(requirement).replace("_", "-") in pinned, requirement
    # The BUILD's srcs globs name files that exist as committed (no generated module is needed).
    build = _read("BUILD")
    for pattern in re.findall(r'"(evonorm_tf/[\w/]+\.py)"', build):
        assert os.path.exists(os.path.join(REPOSITORY, pattern)), pattern
