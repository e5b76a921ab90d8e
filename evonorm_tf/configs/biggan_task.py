"""BigGAN as a Model Garden task with its own Orbit trainer (two optimizers).

Model Garden's `base_trainer.Trainer` owns one model and one optimizer and
calls `task.train_step(inputs, model, optimizer, metrics)` once per step; a
GAN step needs two optimizers, `discriminator_steps` D updates per G update
and an EMA of G updated in cross-replica context. So `BigGANTask` (registered
for `configs.biggan.BigGANTask`) builds the models, inputs and feature network,
and `BigGANTask.create_trainer` returns a `GANOrbitTrainer`
(`orbit.StandardTrainer` + `orbit.StandardEvaluator`) that
`official.core.train_lib.run_experiment(..., trainer=...)` drives with its
`orbit.Controller`, checkpoint manager (G, D, EMA G, both optimizers, step;
resumed from the newest checkpoint in `model_dir`) and summaries:

    python tpu_scripts/train.py --experiment=evonorm_biggan_digits \\
      --mode=train_and_eval --model_dir=/tmp/biggan_digits

Training step (`strategy.run` of `GANTrainer.replica_step`, then
`GANTrainer.finish_step`): hinge losses averaged over the global batch (each
replica's loss divided by the replica count before its gradients are summed),
each replica drawing its own rows of the global latents, so N replicas take
the step one device takes on the concatenated batch (BN generators: use
`norm_activation.synchronized: true` for global batch statistics).

Evaluation: first the EMA generator's batch statistics are recomputed from
`evaluation.standing_samples` of its own samples (`standing_statistics`);
then one EMA-generator sample per validation image with that image's label
(latents fixed by `evaluation.seed`, truncated at `evaluation.truncation` if
> 0), features and logits from the feature network on the host, then FID
against the validation images (their statistics are computed once) and IS,
and the same metrics at each threshold of `evaluation.truncation_curve`; a
class-per-row sample grid goes to `<model_dir>/samples/samples_<step>.png`
and, as an image summary `samples`, to `<model_dir>/<validation_summary_subdir>`;
Orbit writes the returned `fid_<network>`, `inception_score_<network>`,
`inception_score_std_<network>` (`evaluation.metric_names`) as scalars there.
"""

import os

import numpy as np
import orbit
import tensorflow as tf
import tf_keras
from official.core import base_task, task_factory

from evonorm_tf import factory, registry
from evonorm_tf import tf_keras as evonorm_tf_keras  # noqa: F401  (registers the tf_keras front-end)
from evonorm_tf.configs import biggan as biggan_config
from evonorm_tf.gan import evaluation, fid_inception
from evonorm_tf.gan.discriminator import Discriminator
from evonorm_tf.gan.generator import Generator
from evonorm_tf.gan.standing_statistics import (accumulate_standing_statistics,
                                                snapshot_statistics)
from evonorm_tf.gan.training import GANTrainer

__all__ = ["BigGANTask", "GANOrbitTrainer", "sample_grid"]

_METRICS = ("discriminator_loss", "generator_loss", "real_logits", "fake_logits")


def _decode_example(serialized, image_size, label_offset):
    """A Model Garden classification example → (image in [-1, 1], label)."""
    parsed = tf.io.parse_single_example(serialized, {
        "image/encoded": tf.io.FixedLenFeature((), tf.string),
        "image/class/label": tf.io.FixedLenFeature((), tf.int64),
    })
    image = tf.io.decode_image(parsed["image/encoded"], channels=3, expand_animations=False)
    shape = tf.shape(image)
    side = tf.minimum(shape[0], shape[1])
    image = tf.image.crop_to_bounding_box(image, (shape[0] - side) // 2, (shape[1] - side) // 2,
                                          side, side)
    image = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size),
                            method="bilinear", antialias=True)
    image = tf.clip_by_value(image / 127.5 - 1.0, -1.0, 1.0)
    image.set_shape((image_size, image_size, 3))
    return image, tf.cast(parsed["image/class/label"] - label_offset, tf.int32)


def sample_grid(generator, classes, per_class, seed):
    """uint8 `[rows·H, per_class·W, C]`: row k shows class `classes[k]` (EMA G, inference)."""
    labels = np.repeat(np.asarray(classes, np.int32), per_class)
    z = tf.random.stateless_normal((len(labels), generator.z_dim), [seed, 1])
    images = np.asarray(generator((z, tf.constant(labels)), training=False))
    rows, (height, width, channels) = len(classes), images.shape[1:]
    grid = images.reshape(rows, per_class, height, width, channels).transpose(0, 2, 1, 3, 4)
    grid = grid.reshape(rows * height, per_class * width, channels)
    return np.clip((grid + 1.0) * 127.5, 0, 255).astype(np.uint8)


@task_factory.register_task_cls(biggan_config.BigGANTask)
class BigGANTask(base_task.Task):
    """Builds BigGAN's models, inputs and feature network from a `BigGANTask` config."""

    def __init__(self, params, logging_dir=None, name=None):
        biggan_config.check_task(params)
        super().__init__(params, logging_dir=logging_dir, name=name)

    def _norm_act_kwargs(self):
        norm = self.task_config.model.generator.norm_activation
        accepted = registry.accepted_arguments(norm.type, "tf_keras")
        options = {"momentum": norm.momentum, "epsilon": norm.epsilon, "groups": norm.groups,
                   "synchronized": norm.synchronized}
        return {key: value for key, value in options.items() if key in accepted and value is not None}

    def build_generator(self):
        model, config = self.task_config.model, self.task_config.model.generator
        return Generator(resolution=model.resolution, ch=config.ch, z_dim=config.z_dim,
                         shared_dim=config.shared_dim, num_classes=model.num_classes,
                         norm_act=config.norm_activation.type.strip().lower(),
                         norm_act_kwargs=self._norm_act_kwargs(), use_sn=config.use_sn,
                         image_channels=model.image_channels)

    def build_model(self):
        """A generator (Model Garden's abstract method; training builds all three via `build_gan`)."""
        return self.build_generator()

    def build_gan(self):
        """A built `GANTrainer`: G, D, EMA G, both Adams (call under the strategy's scope).

        Initial weights are reproducible: the global seeds are set from `task.seed` first.
        """
        model, optimization = self.task_config.model, self.task_config.optimization
        tf_keras.utils.set_random_seed(self.task_config.seed)
        discriminator = Discriminator(resolution=model.resolution, ch=model.discriminator.ch,
                                      num_classes=model.num_classes,
                                      use_sn=model.discriminator.use_sn)
        gan = GANTrainer(
            self.build_generator(), discriminator, self.build_generator(),
            generator_lr=optimization.generator_learning_rate,
            discriminator_lr=optimization.discriminator_learning_rate,
            beta_1=optimization.beta_1, beta_2=optimization.beta_2,
            adam_epsilon=optimization.epsilon,
            discriminator_steps=optimization.discriminator_steps,
            ema_decay=optimization.ema_decay, ema_start_step=optimization.ema_start_step,
            orthogonal_regularization=optimization.orthogonal_regularization,
            seed=self.task_config.seed)
        gan.build((model.resolution, model.resolution, model.image_channels))
        return gan

    def build_inputs(self, params, input_context=None):
        """Batches of (images in [-1, 1], int32 labels); training batches hold all D steps."""
        per_replica = (input_context.get_per_replica_batch_size(params.global_batch_size)
                       if input_context else params.global_batch_size)
        if params.is_training:
            per_replica *= self.task_config.optimization.discriminator_steps
        if params.source == "digits":
            dataset = self._digits(params)
        else:
            dataset = self._tfrecords(params, input_context)
        if params.is_training:
            dataset = dataset.shuffle(params.shuffle_buffer_size, seed=params.seed).repeat()
        return dataset.batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def _digits(self, params):
        from evonorm_tf.data import digits

        split = digits.load_digits_split(image_size=params.image_size)
        images, labels = ((split.train_images, split.train_labels) if params.is_training
                          else (split.test_images, split.test_labels))
        return tf.data.Dataset.from_tensor_slices((images * 2.0 - 1.0, labels))

    def _tfrecords(self, params, input_context):
        patterns = [pattern for pattern in params.input_path.split(",") if pattern]
        files = tf.data.Dataset.list_files(patterns, shuffle=params.is_training, seed=params.seed)
        if input_context and input_context.num_input_pipelines > 1:
            files = files.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        dataset = files.interleave(tf.data.TFRecordDataset, cycle_length=params.cycle_length,
                                   num_parallel_calls=tf.data.AUTOTUNE,
                                   deterministic=not params.is_training)
        return dataset.map(
            lambda record: _decode_example(record, params.image_size, params.label_offset),
            num_parallel_calls=tf.data.AUTOTUNE)

    def build_feature_network(self):
        """`images in [-1, 1] → (features, logits)` for FID and IS (see `FeatureNetwork`)."""
        network = self.task_config.evaluation.feature_network
        if network.type == "digits":
            return evaluation.digits_feature_network(image_size=self.task_config.model.resolution,
                                                     seed=self.task_config.seed)
        if network.type == "inception_2015":
            return fid_inception.fid_inception_network(network.weights_path)
        if network.type == "inception_v3":
            return evaluation.inception_v3_network(network.weights_path, classes=network.classes)
        return evaluation.keras_model_network(network.model_path, network.feature_layer)

    def create_trainer(self, params, train=True, evaluate=True):
        """The Orbit trainer/evaluator for `run_experiment(trainer=...)` (under the scope)."""
        return GANOrbitTrainer(params, self, train=train, evaluate=evaluate)

    def train_step(self, inputs, model, optimizer, metrics=None):
        raise NotImplementedError("BigGANTask trains through create_trainer() (two optimizers)")

    def validation_step(self, inputs, model, metrics=None):
        raise NotImplementedError("BigGANTask evaluates through create_trainer()")


class GANOrbitTrainer(orbit.StandardTrainer, orbit.StandardEvaluator):
    """Trains and evaluates a `BigGANTask` under the current `tf.distribute` strategy.

    Exposes what `train_lib.OrbitExperimentRunner` uses of a trainer:
    `checkpoint`, `global_step`, `initialize`, `model`, `optimizer`, `strategy`.
    Create it under the strategy's scope.
    """

    def __init__(self, params, task, train=True, evaluate=True):
        self._strategy = tf.distribute.get_strategy()
        self._params = params
        self._task = task
        self._config = params.task
        self.gan = task.build_gan()
        self._checkpoint = self.gan.checkpoint()
        self._metrics = {name: tf_keras.metrics.Mean(name, dtype=tf.float32) for name in _METRICS}
        self._eval_batches = tf.Variable(0, dtype=tf.int64, trainable=False,
                                         aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        replica_step = self.gan.replica_step
        self._replica_step = (tf.function(replica_step, jit_compile=True)
                              if self._config.jit_compile else replica_step)
        self._feature_network = None
        self._real_statistics = None
        if train:
            orbit.StandardTrainer.__init__(
                self, orbit.utils.make_distributed_dataset(
                    self._strategy, task.build_inputs, self._config.train_data),
                options=orbit.StandardTrainerOptions(
                    use_tf_while_loop=params.trainer.train_tf_while_loop,
                    use_tf_function=params.trainer.train_tf_function))
        if evaluate:
            orbit.StandardEvaluator.__init__(
                self, orbit.utils.make_distributed_dataset(
                    self._strategy, task.build_inputs, self._config.validation_data),
                options=orbit.StandardEvaluatorOptions(
                    use_tf_function=params.trainer.eval_tf_function, use_tf_while_loop=False,
                    recreate_iterator_for_each_eval=True))

    strategy = property(lambda self: self._strategy)
    checkpoint = property(lambda self: self._checkpoint)
    global_step = property(lambda self: self.gan.step)
    model = property(lambda self: self.gan.ema_generator)
    optimizer = None  # two optimizers, both in `checkpoint`; none is Model Garden's EMA wrapper

    def initialize(self):
        """Nothing to load when no checkpoint exists (the EMA starts as a copy of G)."""

    # Training.
    def train_loop_begin(self):
        for metric in self._metrics.values():
            metric.reset_state()

    def train_step(self, iterator):
        def step_fn(images, labels):
            outputs = self._replica_step(images, labels)
            for name, value in outputs.items():  # per-replica metric states, summed on read
                self._metrics[name].update_state(value)

        images, labels = next(iterator)
        self._strategy.run(step_fn, args=(images, labels))
        self.gan.finish_step()

    def train_loop_end(self):
        logs = {name: metric.result() for name, metric in self._metrics.items()}
        # Model Garden's recovery action watches `training_loss` (NaN or above its bound).
        logs["training_loss"] = logs["discriminator_loss"]
        return logs

    # Evaluation.
    def eval_begin(self):
        if self._feature_network is None:
            self._feature_network = self._task.build_feature_network()
        config = self._config.evaluation
        self._restore_statistics = snapshot_statistics(self.gan.ema_generator)
        if config.standing_samples:
            accumulate_standing_statistics(
                self.gan.ema_generator, config.standing_samples,
                config.standing_batch_size or self._config.train_data.global_batch_size,
                self._config.model.num_classes, seed=config.seed,
                truncation=config.truncation or None, strategy=self._strategy)
        self._eval_batches.assign(0)
        return {"real": [], "fake": [], "logits": [], "labels": []}

    def _latents(self, count, replica, batch, truncation):
        """The evaluated latents of one replica's part of evaluation batch `batch`."""
        shape = (count, self.gan.ema_generator.z_dim)
        key = tf.stack([tf.constant(self._config.evaluation.seed, tf.int64) * 1000
                        + tf.cast(replica, tf.int64), tf.cast(batch, tf.int64)])
        if truncation:
            return tf.random.stateless_parameterized_truncated_normal(
                shape, key, 0.0, 1.0, -truncation, truncation)
        return tf.random.stateless_normal(shape, key)

    def eval_step(self, iterator):
        images, labels = next(iterator)
        truncation = self._config.evaluation.truncation

        def generate(labels):
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            z = self._latents(tf.shape(labels)[0], replica,
                              tf.convert_to_tensor(self._eval_batches), truncation)
            return self.gan.ema_generator((z, labels), training=False)

        fakes = self._strategy.run(generate, args=(labels,))
        self._eval_batches.assign_add(1)
        return {"real": self._strategy.experimental_local_results(images),
                "fake": self._strategy.experimental_local_results(fakes),
                "labels": self._strategy.experimental_local_results(labels)}

    def eval_reduce(self, state=None, step_outputs=None):
        fakes = np.concatenate([np.asarray(part) for part in step_outputs["fake"]])
        features, logits = evaluation.extract(self._feature_network, fakes, batch_size=128)
        state["fake"].append(features)
        state["logits"].append(logits)
        state["labels"].append([np.asarray(part) for part in step_outputs["labels"]])
        if self._real_statistics is None:
            reals = np.concatenate([np.asarray(part) for part in step_outputs["real"]])
            state["real"].append(evaluation.extract(self._feature_network, reals,
                                                    batch_size=128)[0])
        return state

    def eval_end(self, state=None):
        if self._real_statistics is None:
            self._real_statistics = evaluation.gaussian_statistics(np.concatenate(state["real"]))
        logs = self._metrics_of(np.concatenate(state["fake"]), np.concatenate(state["logits"]))
        self._write_samples()
        for threshold in self._config.evaluation.truncation_curve or ():
            for name, value in self._truncated_metrics(state["labels"], threshold).items():
                logs[f"{name}_truncation_{threshold:g}"] = value
        self._restore_statistics()  # the EMA's own statistics again (standing ones were for eval)
        return logs

    def _metrics_of(self, features, logits):
        splits = min(self._config.evaluation.inception_score_splits, len(logits))
        score, score_std = evaluation.inception_score(logits, splits=splits)
        names = evaluation.metric_names(self._feature_network)
        fake = evaluation.gaussian_statistics(features)
        return {names["fid"]: evaluation.frechet_distance(*self._real_statistics, *fake),
                names["inception_score"]: score, names["inception_score_std"]: score_std}

    def _truncated_metrics(self, labels, truncation):
        """The metrics of samples for the evaluated labels, latents truncated at `truncation`.

        The standing statistics are recomputed at that truncation first; each
        replica's part of each batch gets the latents the evaluation draws for
        it (same keys), so a threshold equal to `evaluation.truncation` gives
        the evaluation's own samples.
        """
        config = self._config.evaluation
        if config.standing_samples:
            accumulate_standing_statistics(
                self.gan.ema_generator, config.standing_samples,
                config.standing_batch_size or self._config.train_data.global_batch_size,
                self._config.model.num_classes, seed=config.seed, truncation=truncation,
                strategy=self._strategy)
        features, logits = [], []
        for batch, parts in enumerate(labels):
            fakes = [self.gan.ema_generator(
                (self._latents(len(part), replica, batch, truncation), tf.constant(part)),
                training=False) for replica, part in enumerate(parts)]
            batch_features, batch_logits = evaluation.extract(
                self._feature_network, np.concatenate([np.asarray(f) for f in fakes]),
                batch_size=128)
            features.append(batch_features)
            logits.append(batch_logits)
        return self._metrics_of(np.concatenate(features), np.concatenate(logits))

    def _write_samples(self):
        model_dir = self._task.logging_dir
        if not model_dir:
            return
        config, model = self._config.evaluation, self._config.model
        classes = np.linspace(0, model.num_classes - 1, min(config.grid_classes, model.num_classes))
        grid = sample_grid(self.gan.ema_generator, classes.round().astype(np.int32),
                           config.grid_per_class, config.seed)
        step = int(self.global_step.numpy())
        tf.io.write_file(os.path.join(model_dir, "samples", f"samples_{step:06d}.png"),
                         tf.io.encode_png(grid))
        if not hasattr(self, "_image_writer"):
            self._image_writer = tf.summary.create_file_writer(
                os.path.join(model_dir, self._params.trainer.validation_summary_subdir))
        with self._image_writer.as_default(step=step):
            tf.summary.image("samples", grid[None].astype(np.float32) / 255.0)
        self._image_writer.flush()
