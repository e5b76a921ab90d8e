"""Prints what each TPU YAML's run covers: steps, epochs, training images and evaluations.

    python tpu_scripts/run_lengths.py            # the table in docs/tpu.md

Every number is read from the YAML loaded into its experiment (as train.py
loads it): training images = train_steps × global batch, epochs = those images
/ the training split (ImageNet 1,281,167; COCO train2017 118,287), and each
evaluation covers validation_steps × batch images, the last batch partial
(drop_remainder: false), at most the validation split (ImageNet 50,000; COCO 5,000).
"""

import glob
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, ROOT)

TRAIN_EXAMPLES = {"imagenet": 1281167, "coco": 118287}
VALIDATION_EXAMPLES = {"imagenet": 50000, "coco": 5000}
# The slice each file's header names (global batch / cores = the per-core batch its recipe uses).
SLICES = {"resnet50": "v3-8", "efficientnet_b0": "v3-8", "efficientnet_b5": "v3-32", "maskrcnn": "v3-32"}
HEADER = ("| config | slice | global batch | train steps | epochs | training images "
          "| checkpoint every | evaluation every | images per evaluation |")


def experiment_for(name):
    """The registered experiment a YAML in official_configs/ overrides."""
    if name.startswith("resnet"):
        return "evonorm_resnet_imagenet"
    if name.startswith("efficientnet"):
        return "evonorm_efficientnet_imagenet"
    if name.startswith("maskrcnn_spinenet"):
        return "evonorm_maskrcnn_spinenet_coco"
    return "evonorm_maskrcnn_resnetfpn_coco"


def run_length(path):
    """A dict of what the run configured by `path` covers."""
    from official.core import exp_factory
    from official.modeling import hyperparams

    import evonorm_tf.configs  # noqa: F401  (registers the experiments)

    name = os.path.basename(path)
    config = hyperparams.override_params_dict(exp_factory.get_exp_config(experiment_for(name)), path,
                                              is_strict=True)
    config.validate()
    data = "coco" if name.startswith("maskrcnn") else "imagenet"
    batch = config.task.train_data.global_batch_size
    steps = config.trainer.train_steps
    eval_batch = config.task.validation_data.global_batch_size
    eval_steps = config.trainer.validation_steps
    evaluated = eval_steps * eval_batch
    if not config.task.validation_data.drop_remainder:
        evaluated = min(evaluated, VALIDATION_EXAMPLES[data])
    else:
        evaluated = min(evaluated, VALIDATION_EXAMPLES[data] // eval_batch * eval_batch)
    return {
        "config": name,
        "slice": next(value for key, value in SLICES.items() if name.startswith(key)),
        "batch": batch,
        "steps": steps,
        "images": steps * batch,
        "epochs": steps * batch / TRAIN_EXAMPLES[data],
        "checkpoint": config.trainer.checkpoint_interval,
        "interval": config.trainer.validation_interval,
        "evaluations": math.ceil(steps / config.trainer.validation_interval),
        "evaluated": evaluated,
        "validation": VALIDATION_EXAMPLES[data],
    }


def table_row(run):
    return (f"| `{run['config']}` | {run['slice']} | {run['batch']:,} | {run['steps']:,} | {run['epochs']:.1f} "
            f"| {run['images']:,} | {run['checkpoint']:,} steps | {run['interval']:,} steps ({run['evaluations']} times) "
            f"| {run['evaluated']:,} of {run['validation']:,} |")


def tpu_yamls():
    return sorted(glob.glob(os.path.join(ROOT, "official_configs", "*_tpu.yaml")))


def table():
    """The markdown table: a header, a rule and one row per TPU YAML except BigGAN's."""
    rows = [table_row(run_length(path)) for path in tpu_yamls() if not os.path.basename(path).startswith("biggan")]
    return [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|", *rows]


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print("\n".join(table()))
