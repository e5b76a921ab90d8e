"""The YAML configs' comments name flags that exist.

A comment naming a `tpu_scripts/<script>.py` command (a `# Run: ...` block
with its continuation lines, or an inline comment) may only use flags that
script defines (train.py: its own and Model Garden's `official.common.flags`).
"""

import glob
import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "official_configs", "*.yaml")))
SCRIPT = re.compile(r"tpu_scripts/(\w+)\.py")
FLAG = re.compile(r"(?<![\w-])--(\w+)")
DEFINE = re.compile(r"DEFINE_\w+\(\s*['\"](\w+)['\"]")


def _defined_flags(path):
    with open(path, encoding="utf-8") as handle:
        return set(DEFINE.findall(handle.read()))


def script_flags():
    """`{script name: flags it accepts}` for every Python script of tpu_scripts/."""
    model_garden = os.path.join(
        os.path.dirname(importlib.util.find_spec("official").origin), "common", "flags.py")
    flags = {}
    for path in glob.glob(os.path.join(ROOT, "tpu_scripts", "*.py")):
        name = os.path.splitext(os.path.basename(path))[0]
        flags[name] = _defined_flags(path) | {"help", "helpshort", "helpfull"}
    flags["train"] |= _defined_flags(model_garden)
    return flags


def commented_flags(path):
    """`[(line number, script, flag)]` for flags in comments that name a tpu_scripts command."""
    found, script = [], None
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if "#" not in line:
                script = None
                continue
            code, comment = line.split("#", 1)
            if code.strip():  # an inline comment: only its own command
                script = None
            scripts = SCRIPT.findall(comment)
            if scripts:
                script = scripts[-1]
                comment = comment[comment.index(f"tpu_scripts/{script}.py"):]
            elif not comment.lstrip().startswith("-"):  # not a continuation line
                script = None
            if script:
                found.extend((number, script, flag) for flag in FLAG.findall(comment))
    return found


def test_the_comment_scanner_sees_script_flags():
    flags = script_flags()
    assert {"synthetic_classes", "output_dir", "image_dir"} <= flags["prepare_imagenet"]
    assert {"experiment", "config_file", "params_override", "cpu_replicas"} <= flags["train"]
    smoke = os.path.join(ROOT, "official_configs", "resnet_evonorm_b0_cpu_smoke.yaml")
    assert ("prepare_imagenet", "synthetic_classes") in {(s, f) for _, s, f in commented_flags(smoke)}


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_commented_flags_exist(path):
    flags = script_flags()
    unknown = [f"line {number}: tpu_scripts/{script}.py --{flag}"
               for number, script, flag in commented_flags(path) if flag not in flags.get(script, ())]
    assert not unknown, unknown
