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
import sys

from absl import app, flags, logging

# Run from a checkout without installing: make `evonorm_tf` importable.
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS


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
        sys.exit(f"train.py: --cpu_replicas={replicas} must be applied before TensorFlow starts: {error}")


def parse_experiment():
    """Model Garden's configuration parsing, with configuration errors reported in one line."""
    from official.core import exp_factory, train_utils

    from evonorm_tf.configs import EXPERIMENTS

    try:
        exp_factory.get_exp_config(FLAGS.experiment)
    except LookupError:
        sys.exit(
            f"train.py: unknown experiment {FLAGS.experiment!r}; this project registers "
            f"{', '.join(EXPERIMENTS)} (Model Garden's vision experiments are registered too)"
        )
    try:
        return train_utils.parse_configuration(FLAGS)
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        sys.exit(f"train.py: invalid configuration for {FLAGS.experiment!r}: {message}")


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
    app.run(main)
