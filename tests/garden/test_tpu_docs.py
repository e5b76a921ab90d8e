"""docs/tpu.md: the run-length table is what tpu_scripts/run_lengths.py computes from the YAMLs,
and the numbers the walkthroughs quote are those of the files they launch."""

import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "tpu.md")


def _run_lengths():
    spec = importlib.util.spec_from_file_location("run_lengths", os.path.join(ROOT, "tpu_scripts", "run_lengths.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_lengths = _run_lengths()


@pytest.fixture(scope="module")
def doc():
    return open(DOC).read()


def test_table_is_the_output_of_run_lengths(doc):
    start = doc.index("<!-- run-lengths: python tpu_scripts/run_lengths.py -->\n")
    end = doc.index("<!-- /run-lengths -->")
    table = doc[start:end].splitlines()[1:]
    assert table == run_lengths.table()
    # One row per TPU YAML but BigGAN's, ResNet-50 and Mask R-CNN included.
    names = [row.split("`")[1] for row in table[2:]]
    assert "resnet50_evonorm_b0_tpu.yaml" in names and "maskrcnn_resnet50fpn_evonorm_b0_tpu.yaml" in names
    assert len(names) == len([p for p in run_lengths.tpu_yamls() if "biggan" not in p])


def test_run_lengths_arithmetic():
    resnet = run_lengths.run_length(os.path.join(ROOT, "official_configs", "resnet50_evonorm_b0_tpu.yaml"))
    assert (resnet["steps"], resnet["batch"], resnet["images"]) == (112590, 1024, 112590 * 1024)
    assert resnet["epochs"] == pytest.approx(112590 * 1024 / 1281167) and round(resnet["epochs"], 1) == 90.0
    assert (resnet["interval"], resnet["evaluations"], resnet["evaluated"]) == (1251, 90, 50000)
    mask = run_lengths.run_length(os.path.join(ROOT, "official_configs", "maskrcnn_resnet50fpn_evonorm_b0_tpu.yaml"))
    assert (mask["steps"], mask["batch"], mask["slice"]) == (162050, 256, "v3-32")
    assert round(mask["epochs"], 1) == 350.7 and mask["evaluated"] == 5000
    assert mask["evaluations"] == -(-162050 // 4620) == 36


def test_walkthrough_numbers_match_the_launched_files(doc):
    resnet = run_lengths.run_length(os.path.join(ROOT, "official_configs", "resnet50_evonorm_b0_tpu.yaml"))
    mask = run_lengths.run_length(os.path.join(ROOT, "official_configs", "maskrcnn_resnet50fpn_evonorm_b0_tpu.yaml"))
    assert f"{resnet['steps']:,} steps of {resnet['batch']:,} images, {resnet['epochs']:.0f} epochs" in doc
    assert f"every {resnet['interval']:,} steps (one epoch)" in doc
    last = 50000 - (50000 // 1024) * 1024
    assert f"49 batches of 1,024,\nthe last of {last}" in doc or f"49 batches of 1,024, the last of {last}" in doc
    assert re.search(rf"{mask['steps']:,}\s+steps of {mask['batch']} images \(8 per core\), {mask['epochs']:.1f} epochs", doc)
    assert f"156 batches of 32 and one of {5000 - 156 * 32}" in doc
    assert f"every\n{mask['interval']:,} steps" in doc or f"every {mask['interval']:,} steps" in doc
