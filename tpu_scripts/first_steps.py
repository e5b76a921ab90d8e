"""First command on a new TPU VM: builds a classification experiment's model under its strategy and times a few steps.

    NEXT_PLUGGABLE_DEVICE_USE_C_API=true TF_PLUGGABLE_DEVICE_LIBRARY_PATH=/lib/libtpu.so \
      python3 tpu_scripts/first_steps.py --experiment=evonorm_resnet_imagenet \
      --config_file=official_configs/resnet50_evonorm_b0_tpu.yaml --tpu=local --steps=20

It reads the experiment exactly as `tpu_scripts/train.py` does (Model Garden's
config, the YAML files, `--params_override`), builds the distribution strategy
of `runtime.distribution_strategy` (TPUStrategy for the `*_tpu.yaml` files),
and inside it the task's model and optimizer. Then it runs `--steps` training
steps of Model Garden's `ImageClassificationTask.train_step` on one synthetic
batch of the configured global batch size, input size and dtype (no data,
no checkpoint, nothing written), and prints:

    devices: 8 x TPU (/job:localhost/replica:0/task:0/device:TPU:0, ...)
    strategy: TPUStrategy, 8 replicas in sync, global batch 1024 (128 per replica)
    first step (tracing and compilation): 61.2 s
    step time: median 0.291 s over 19 steps, 3519 images/s, loss 6.93

A run that fails here fails the same way in `train.py`, minutes instead of
hours into a paid run. Only image classification experiments are supported.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="a registered classification experiment")
    parser.add_argument("--config_file", action="append", default=[], help="YAML override; repeatable")
    parser.add_argument("--params_override", default="", help="comma-separated key=value overrides")
    parser.add_argument("--tpu", default="", help="'local' on a TPU VM, or a TPU's name (as train.py --tpu)")
    parser.add_argument("--steps", type=int, default=10, help="training steps to run (at least 2)")
    args = parser.parse_args(argv)
    if args.steps < 2:
        sys.exit(f"first_steps.py: --steps must be at least 2 (one compiles, the others are timed); "
                 f"received --steps={args.steps}")
    return args


def load_config(args):
    """Model Garden's experiment config with the YAML files and overrides applied, as train.py."""
    from official.core import exp_factory
    from official.modeling import hyperparams

    from evonorm_tf.configs import EXPERIMENTS

    try:
        params = exp_factory.get_exp_config(args.experiment)
    except LookupError:
        sys.exit(f"first_steps.py: unknown experiment {args.experiment!r}; this project registers "
                 f"{', '.join(EXPERIMENTS)}")
    try:
        for path in args.config_file:
            params = hyperparams.override_params_dict(params, path, is_strict=True)
        if args.params_override:
            params = hyperparams.override_params_dict(params, args.params_override, is_strict=True)
        if args.tpu:
            params.override({"runtime": {"tpu": args.tpu}}, is_strict=True)
        params.validate()
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        sys.exit(f"first_steps.py: invalid configuration for {args.experiment!r}: {error}")
    from official.vision.configs import image_classification

    if not isinstance(params.task, image_classification.ImageClassificationTask):
        sys.exit(f"first_steps.py: --experiment={args.experiment} is not an image classification experiment")
    params.lock()
    return params


def synthetic_dataset(params, input_context):
    """One per-replica batch of uniform images and random labels, repeated."""
    import tensorflow as tf

    data = params.task.train_data
    batch = input_context.get_per_replica_batch_size(data.global_batch_size)
    height, width, channels = params.task.model.input_size
    images = tf.random.stateless_uniform([batch, height, width, channels], seed=[0, 1], minval=-1.0, maxval=1.0)
    labels = tf.random.stateless_uniform([batch], seed=[0, 2], maxval=params.task.model.num_classes,
                                         dtype=tf.int32)
    return tf.data.Dataset.from_tensors((tf.cast(images, data.dtype), labels)).repeat()


def main(argv=None):
    args = parse_args(argv)
    params = load_config(args)

    import tensorflow as tf
    from official.common import distribute_utils
    from official.core import task_factory
    from official.modeling import performance

    runtime = params.runtime
    if runtime.mixed_precision_dtype:
        performance.set_mixed_precision_policy(runtime.mixed_precision_dtype)
    strategy = distribute_utils.get_distribution_strategy(
        distribution_strategy=runtime.distribution_strategy,
        all_reduce_alg=runtime.all_reduce_alg,
        num_gpus=runtime.num_gpus,
        tpu_address=runtime.tpu,
    )
    devices = list(strategy.extended.worker_devices)
    kinds = sorted({tf.DeviceSpec.from_string(name).device_type for name in devices})
    print(f"devices: {len(devices)} x {'/'.join(kinds)} ({', '.join(devices)})")
    replicas = strategy.num_replicas_in_sync
    global_batch = params.task.train_data.global_batch_size
    print(f"strategy: {type(strategy).__name__}, {replicas} replicas in sync, global batch {global_batch} "
          f"({global_batch // replicas} per replica)", flush=True)

    with strategy.scope():
        task = task_factory.get_task(params.task)
        model = task.build_model()
        optimizer = task.create_optimizer(params.trainer.optimizer_config, runtime)
        metrics = task.build_metrics(training=True)
    iterator = iter(strategy.distribute_datasets_from_function(lambda context: synthetic_dataset(params, context)))

    @tf.function
    def train_step(iterator):
        logs = strategy.run(task.train_step, args=(next(iterator), model, optimizer, metrics))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, logs[task.loss], axis=None)

    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = float(train_step(iterator))
        times.append(time.perf_counter() - start)
    median = statistics.median(times[1:])
    print(f"first step (tracing and compilation): {times[0]:.1f} s")
    print(f"step time: median {median:.3f} s over {len(times) - 1} steps, {global_batch / median:.0f} images/s, "
          f"loss {loss:.3g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
