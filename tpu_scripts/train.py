"""Trains an evonorm_tf experiment with Model Garden's trainer.

The flags are Model Garden's (`official.common.flags`): `--experiment`,
`--mode`, `--model_dir`, `--config_file` (repeatable), `--params_override`,
`--tpu`, `--gin_file`, `--gin_params`, ... The driver registers this
project's backbones and experiments (`import evonorm_tf.configs`), then runs
`official.core.train_lib.run_experiment` exactly as `official/vision/train.py`.

    python tpu_scripts/train.py --experiment=evonorm_resnet_imagenet \
      --config_file=official_configs/resnet50_evonorm_b0_tpu.yaml \
      --mode=train_and_eval --model_dir=gs://BUCKET/resnet50_evonorm_b0 --tpu=local \
      --params_override="task.train_data.input_path=gs://BUCKET/imagenet/train*,task.validation_data.input_path=gs://BUCKET/imagenet/valid*"

On a Cloud TPU VM pass `--tpu=local` (Model Garden sets `runtime.tpu` from
`--tpu`, overriding the YAML). A run restarted with the same `--model_dir`
resumes from its newest checkpoint.

Extra flags: `--seed=N` seeds Python, NumPy and TensorFlow before the model
is built (Model Garden sets no seed; data shuffling has its own
`task.train_data.seed`). `--cpu_replicas=N` splits the CPU into N logical devices and, when
the config asks for `mirrored` with `num_gpus: 0`, mirrors over them (Model
Garden alone mirrors over CPU:0 only) — for CPU smoke runs of multi-replica
code.
"""

import os
import pprint
import sys

from absl import flags, logging

# Run from a checkout without installing: make `evonorm_tf` importable.
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evonorm_tf import command_line, console_logging  # noqa: E402

FLAGS = flags.FLAGS
PROG = "train.py"
# The modes of official.core.train_lib.run_experiment.
MODES = ("train", "eval", "train_and_eval", "train_and_post_eval", "continuous_eval")


def define_flags():
    from official.common import flags as model_garden_flags

    model_garden_flags.define_flags()
    flags.DEFINE_bool(
        "enable_async_checkpointing", True, "Save checkpoints asynchronously (as official/vision/train.py)."
    )
    flags.DEFINE_integer(
        "cpu_replicas", 0, "If > 1, split the CPU into this many logical devices and mirror over them "
        "when runtime.distribution_strategy is mirrored with num_gpus 0."
    )
    flags.DEFINE_integer(
        "seed", None, "If set, seed Python, NumPy and TensorFlow (tf_keras.utils.set_random_seed) before "
        "the model is built, so runs differing only in config start from the same draws."
    )
    flags.mark_flags_as_required(["experiment", "mode", "model_dir"])


def split_cpu(replicas):
    """Splits the first physical CPU into `replicas` logical devices (before TF initialises them)."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
        )
    except RuntimeError as error:  # devices were initialised already
        raise command_line.CommandLineError(
            f"--cpu_replicas={replicas} must be applied before TensorFlow starts: {error}"
        ) from error


def check_flags():
    """Flag values Model Garden would only reject deep inside a run (or not at all)."""
    import tensorflow as tf
    import yaml

    if FLAGS.mode not in MODES:
        raise command_line.CommandLineError(f"--mode={FLAGS.mode!r} is not one of {', '.join(MODES)}")
    if FLAGS.cpu_replicas < 0:
        raise command_line.CommandLineError(f"--cpu_replicas must be >= 0, received {FLAGS.cpu_replicas}")
    if tf.io.gfile.exists(FLAGS.model_dir) and not tf.io.gfile.isdir(FLAGS.model_dir):
        raise command_line.CommandLineError(f"--model_dir={FLAGS.model_dir!r} is a file, not a folder")
    override = (FLAGS.params_override or "").strip()
    if override and "=" not in override and not tf.io.gfile.exists(override):
        # Model Garden reads an override without `=` as a YAML file.
        raise command_line.CommandLineError(
            f"--params_override={override!r} is neither comma-separated key=value pairs "
            "(task.model.num_classes=10,...) nor an existing YAML file"
        )
    for path in FLAGS.config_file or ():
        if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
            raise command_line.CommandLineError(f"--config_file={path!r}: no such YAML file")
        try:
            with tf.io.gfile.GFile(path) as handle:
                content = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise command_line.CommandLineError(
                f"--config_file={path!r} is not valid YAML: {command_line.one_line(error)}"
            ) from error
        if content is not None and not isinstance(content, dict):
            raise command_line.CommandLineError(
                f"--config_file={path!r} must hold a mapping of config keys, received a "
                f"{type(content).__name__}"
            )


def check_data_paths(params):
    """Every `input_path` the mode reads must match at least one file."""
    import tensorflow as tf

    splits = []
    if "train" in FLAGS.mode:
        splits.append("train_data")
    if "eval" in FLAGS.mode:
        splits.append("validation_data")
    for split in splits:
        data = getattr(params.task, split, None)
        input_path = getattr(data, "input_path", None)
        if not input_path or getattr(data, "tfds_name", None):
            continue
        patterns = input_path.split(",") if isinstance(input_path, str) else list(input_path)
        for pattern in (pattern.strip() for pattern in patterns):
            try:
                matches = tf.io.gfile.glob(pattern) if pattern else [None]
            except tf.errors.OpError as error:
                raise command_line.CommandLineError(
                    f"task.{split}.input_path={pattern!r} cannot be listed: {command_line.one_line(error)}"
                ) from error
            if not matches:
                raise command_line.CommandLineError(
                    f"task.{split}.input_path={pattern!r} matches no file "
                    "(tpu_scripts/prepare_imagenet.py and prepare_coco.py write the records)"
                )
    annotation_file = getattr(params.task, "annotation_file", None)
    if "eval" in FLAGS.mode and annotation_file and not tf.io.gfile.exists(annotation_file):
        raise command_line.CommandLineError(f"task.annotation_file={annotation_file!r} does not exist")


def check_counts(params):
    """Step counts and batch sizes must be positive (Model Garden accepts 0 and negatives)."""
    keys = ["trainer.steps_per_loop"]
    if "train" in FLAGS.mode:
        keys += ["trainer.train_steps", "task.train_data.global_batch_size"]
    if "eval" in FLAGS.mode:
        keys += ["task.validation_data.global_batch_size"]
    for key in keys:
        value = params
        for part in key.split("."):
            value = getattr(value, part, None)
        if value is None:  # a task without this field
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise command_line.CommandLineError(f"{key} must be a positive integer, received {value!r}")


def _sets_strict_groups(config):
    """Whether some grouped norm-act of a config (a nested dict) sets `groups` with `adjust_groups: false`."""
    if isinstance(config, dict):
        grouped = str(config.get("type", "")).startswith(("gn_", "evonorm_s", "graph:"))
        if grouped and config.get("groups") is not None and config.get("adjust_groups") is False:
            return True
        return any(_sets_strict_groups(value) for value in config.values())
    if isinstance(config, (list, tuple)):
        return any(_sets_strict_groups(value) for value in config)
    return False


def check_model(params):
    """Builds the model once where a config sets a GN or S-series group count without `adjust_groups`.

    A `groups` that does not divide some layer's channels is only found when
    that layer is made; built here, before anything is logged or written, the
    `ValueError` naming the layer is one line. Configs that leave `groups`
    unset (or adjust it) skip this build.
    """
    if not _sets_strict_groups(params.as_dict()):
        return
    import tf_keras
    from official.core import task_factory

    try:
        task_factory.get_task(params.task).build_model()
    except ValueError as error:
        raise command_line.CommandLineError(command_line.one_line(error)) from error
    finally:
        tf_keras.backend.clear_session()


def parse_experiment():
    """Model Garden's configuration parsing, with configuration errors reported in one line."""
    import tensorflow as tf
    from official.core import exp_factory, train_utils

    from evonorm_tf.configs import EXPERIMENTS

    try:
        exp_factory.get_exp_config(FLAGS.experiment)
    except LookupError as error:
        raise command_line.CommandLineError(
            f"unknown experiment {FLAGS.experiment!r}; this project registers "
            f"{', '.join(EXPERIMENTS)} (Model Garden's vision experiments are registered too)"
        ) from error
    check_flags()
    try:
        params = train_utils.parse_configuration(FLAGS, print_return=False)
    except (KeyError, ValueError, TypeError, AttributeError, tf.errors.OpError) as error:
        raise command_line.CommandLineError(
            f"invalid configuration for {FLAGS.experiment!r}: {command_line.one_line(error)}"
        ) from error
    check_counts(params)
    check_data_paths(params)
    check_model(params)
    # Logged once the configuration is known to be usable (Model Garden logs it while parsing).
    logging.info("Final experiment parameters:\n%s", pprint.pformat(params.as_dict()))
    return params


def distribution_strategy(params):
    import tensorflow as tf

    from official.common import distribute_utils

    runtime = params.runtime
    if FLAGS.cpu_replicas > 1 and runtime.distribution_strategy == "mirrored" and not runtime.num_gpus:
        devices = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return distribute_utils.get_distribution_strategy(
        distribution_strategy=runtime.distribution_strategy,
        all_reduce_alg=runtime.all_reduce_alg,
        num_gpus=runtime.num_gpus,
        tpu_address=runtime.tpu,
    )


def main(_):
    console_logging.drop_orbit_echo()
    if FLAGS.cpu_replicas > 1:
        split_cpu(FLAGS.cpu_replicas)

    import gin

    from official.core import task_factory, train_lib, train_utils
    from official.modeling import performance
    from official.vision import registry_imports  # noqa: F401  (Model Garden's experiments)
    from official.vision.utils import summary_manager

    import evonorm_tf.configs  # noqa: F401  (our backbones, task config and experiments)

    gin.parse_config_files_and_bindings(FLAGS.gin_file, FLAGS.gin_params)
    params = parse_experiment()
    if "train" in FLAGS.mode:
        train_utils.serialize_config(params, FLAGS.model_dir)
    if params.runtime.mixed_precision_dtype:
        performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)

    if FLAGS.seed is not None:
        import tf_keras

        tf_keras.utils.set_random_seed(FLAGS.seed)
    strategy = distribution_strategy(params)
    logging.info("%s with %d replicas in sync", type(strategy).__name__, strategy.num_replicas_in_sync)
    with strategy.scope():
        task = task_factory.get_task(params.task, logging_dir=FLAGS.model_dir)
        # Tasks with their own Orbit trainer (BigGAN: two optimizers) provide it.
        trainer = (task.create_trainer(params, train="train" in FLAGS.mode, evaluate="eval" in FLAGS.mode)
                   if hasattr(task, "create_trainer") else None)
    train_lib.run_experiment(
        distribution_strategy=strategy,
        task=task,
        trainer=trainer,
        mode=FLAGS.mode,
        params=params,
        model_dir=FLAGS.model_dir,
        eval_summary_manager=summary_manager.maybe_build_eval_summary_manager(
            params=params, model_dir=FLAGS.model_dir
        ),
        enable_async_checkpointing=FLAGS.enable_async_checkpointing,
    )
    train_utils.save_gin_config(FLAGS.mode, FLAGS.model_dir)


if __name__ == "__main__":
    define_flags()
    command_line.run_absl(main, prog=PROG)
