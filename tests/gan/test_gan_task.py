"""BigGAN as a Model Garden task: experiments, Orbit trainer, checkpoints, distribution, inputs.

The Orbit, checkpoint and distribution paths run a one-block 8x8 BigGAN
(an 8x8 row patched into the architecture tables, ch 4) on the native 8x8
digits, and the FID/IS network is a tiny saved Keras model, so that graph
building and XLA compiles stay short; the paper's specs are tested in
test_gan_models.py.
"""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from official.core import exp_factory, task_factory, train_lib

import evonorm_tf.configs  # noqa: F401  (registers the experiments and the task)
from evonorm_tf.configs import biggan
from evonorm_tf.gan import architectures, evaluation
from evonorm_tf.configs.biggan_task import BigGANTask, GANOrbitTrainer

RESOLUTION = 8


@pytest.fixture(scope="module", autouse=True)
def tiny_spec():
    """An 8x8 row: G 4x4·ch → one block → 8x8; D one downsampling block, one plain block."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(architectures.GENERATOR_SPECS, RESOLUTION,
                      architectures.GeneratorSpec(multipliers=(1, 1), attention=()))
        patch.setitem(architectures.DISCRIMINATOR_SPECS, RESOLUTION,
                      architectures.DiscriminatorSpec(multipliers=(1, 1), downsample=(True, False),
                                                      attention=()))
        yield


def tiny_feature_model(path):
    """Flatten → Dense(6, relu) 'features' → Dense(10) logits, saved to `path`."""
    tf_keras.utils.set_random_seed(3)
    inputs = tf_keras.Input((RESOLUTION, RESOLUTION, 1))
    features = tf_keras.layers.Dense(6, activation="relu", name="features")(
        tf_keras.layers.Flatten()(tf_keras.layers.AveragePooling2D(2)(inputs)))
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(10, name="logits")(features))
    model.save(path)
    return model


def tiny_params(feature_path, norm="evonorm_b0", **trainer):
    params = exp_factory.get_exp_config("evonorm_biggan_digits")
    params.override({
        "task": {
            "model": {"resolution": RESOLUTION,
                      "generator": {"ch": 4, "z_dim": 8, "shared_dim": 4,
                                    "norm_activation": {"type": norm, "groups": 4}},
                      "discriminator": {"ch": 4}},
            "optimization": {"ema_decay": 0.5, "ema_start_step": 0},
            "train_data": {"global_batch_size": 4, "shuffle_buffer_size": 64,
                           "image_size": RESOLUTION},
            "validation_data": {"global_batch_size": 20, "image_size": RESOLUTION},
            "evaluation": {"feature_network": {"type": "keras_model", "model_path": feature_path,
                                               "feature_layer": "features"},
                           "grid_per_class": 2, "standing_samples": 8},
        },
        "trainer": {"steps_per_loop": 1, "summary_interval": 1, "checkpoint_interval": 1,
                    "validation_interval": 2, "validation_steps": 2, **trainer},
    })
    params.validate()
    return params


@pytest.fixture(scope="module")
def feature_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("features") / "features.keras")
    tiny_feature_model(path)
    return path


def run(params, model_dir, mode="train_and_eval"):
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        task = task_factory.get_task(params.task, logging_dir=model_dir)
        trainer = task.create_trainer(params, train="train" in mode, evaluate="eval" in mode)
    train_lib.run_experiment(distribution_strategy=strategy, task=task, trainer=trainer,
                             mode=mode, params=params, model_dir=model_dir)
    return trainer


@pytest.fixture(scope="module")
def trained(feature_path, tmp_path_factory):
    """Two steps then one evaluation through Model Garden's `run_experiment`."""
    model_dir = str(tmp_path_factory.mktemp("biggan"))
    trainer = run(tiny_params(feature_path, train_steps=2), model_dir)
    return model_dir, trainer


def events(directory):
    found = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value))
    return found


def test_experiments_register_and_take_norm_overrides():
    imagenet = exp_factory.get_exp_config("evonorm_biggan_imagenet128")
    assert (imagenet.task.model.resolution, imagenet.task.model.generator.ch,
            imagenet.task.model.generator.z_dim) == (128, 96, 120)
    assert imagenet.task.train_data.global_batch_size == 2048
    optimization = imagenet.task.optimization
    # Optimiser settings together from compare_gan's biggan_imagenet128.gin and ModularGAN
    # (Adam ε: tf.train.AdamOptimizer's default; EMA from step 40000), standing statistics
    # from 204,800 samples (compare_gan's eval_gan_lib).
    assert (optimization.generator_learning_rate, optimization.discriminator_learning_rate,
            optimization.beta_1, optimization.beta_2, optimization.epsilon,
            optimization.discriminator_steps, optimization.ema_decay,
            optimization.ema_start_step) == (1e-4, 5e-4, 0.0, 0.999, 1e-8, 2, 0.9999, 40000)
    assert imagenet.task.evaluation.standing_samples == 204_800
    assert imagenet.task.model.generator.norm_activation.type == "bn_relu"
    imagenet.override({"task": {"model": {"generator": {"norm_activation": {"type": "evonorm_s0"}}}}})
    imagenet.validate()
    digits = exp_factory.get_exp_config("evonorm_biggan_digits")
    task = task_factory.get_task(digits.task)
    assert isinstance(task, BigGANTask)
    generator = task.build_generator()
    assert generator.resolution == 32 and generator.z_dim == 64 and len(generator.blocks) == 3
    assert generator.blocks[0].norm1.norm_act == "evonorm_b0"


@pytest.mark.parametrize("key, value", [
    ("task.model.generator.norm_activation.type", "evonorm_x"),
    ("task.model.resolution", 48),
    ("task.model.generator.z_dim", 63),
    ("task.optimization.discriminator_steps", 0),
    ("task.optimization.ema_decay", 1.0),
    ("task.optimization.generator_learning_rate", -1e-4),
    ("task.train_data.source", "csv"),
    ("task.validation_data.image_size", 64),
    ("task.evaluation.feature_network.type", "vgg"),
    ("task.evaluation.inception_score_splits", 0),
    ("task.evaluation.standing_samples", -1),
    ("task.evaluation.truncation", -0.5),
    ("task.optimization.orthogonal_regularization", -1e-4),
])
def test_bad_config_values_raise_naming_them(key, value):
    params = exp_factory.get_exp_config("evonorm_biggan_digits")
    override = value
    for part in reversed(key.split(".")):
        override = {part: override}
    params.override(override)
    with pytest.raises(ValueError, match=key.replace(".", r"\.") + ".*" + repr(value)):
        params.validate()
    with pytest.raises(ValueError, match=repr(value)):
        task_factory.get_task(params.task)


def test_truncation_curve_thresholds_must_be_positive():
    params = exp_factory.get_exp_config("evonorm_biggan_digits")
    params.override({"task": {"evaluation": {"truncation_curve": [1.0, -0.5]}}})
    with pytest.raises(ValueError, match=r"task\.evaluation\.truncation_curve .*-0\.5"):
        params.validate()


def test_evaluation_adds_the_truncation_curve(feature_path):
    """Each threshold's metrics: standing statistics and samples at that truncation."""
    params = tiny_params(feature_path)
    params.override({"task": {"evaluation": {"truncation": 0.5, "truncation_curve": [0.5, 1.0]}}})
    params.validate()
    task = task_factory.get_task(params.task)
    trainer = task.create_trainer(params, train=False, evaluate=True)
    statistics = [v.numpy() for v in trainer.gan.ema_generator.weights if "moving" in v.name]
    assert statistics                                  # EvoNorm-B0: standing statistics matter
    logs = {name: float(value) for name, value in trainer.evaluate(tf.constant(2)).items()}
    metrics = ("fid_keras_model", "inception_score_keras_model", "inception_score_std_keras_model")
    assert set(logs) == {f"{m}{suffix}" for m in metrics
                         for suffix in ("", "_truncation_0.5", "_truncation_1")}
    # The point at the evaluation's own truncation reproduces the evaluation.
    for metric in metrics:
        np.testing.assert_allclose(logs[f"{metric}_truncation_0.5"], logs[metric], rtol=1e-4,
                                   atol=1e-6)
    assert np.isfinite(logs["fid_keras_model_truncation_1"])
    assert abs(logs["fid_keras_model_truncation_1"] - logs["fid_keras_model"]) > 1e-4
    # The EMA's own statistics come back after the curve's standing statistics.
    after = [v.numpy() for v in trainer.gan.ema_generator.weights if "moving" in v.name]
    for before, value in zip(statistics, after):
        np.testing.assert_array_equal(before, value)
    # The point at 1.0 is what an evaluation at truncation 1.0 of the same generator reports.
    params.override({"task": {"evaluation": {"truncation": 1.0, "truncation_curve": []}}})
    other = task_factory.get_task(params.task).create_trainer(params, train=False, evaluate=True)
    for source, target in zip(trainer.gan.ema_generator.weights, other.gan.ema_generator.weights):
        target.assign(source.numpy())
    at_one = {name: float(value) for name, value in other.evaluate(tf.constant(2)).items()}
    assert set(at_one) == set(metrics)
    for metric in metrics:
        np.testing.assert_allclose(logs[f"{metric}_truncation_1"], at_one[metric], rtol=1e-4,
                                   atol=1e-6)


def test_train_step_under_jit_compile(feature_path):
    params = tiny_params(feature_path, train_steps=1)
    params.override({"task": {"jit_compile": True, "optimization": {"discriminator_steps": 1}}})
    task = task_factory.get_task(params.task)
    trainer = task.create_trainer(params, evaluate=False)
    before = [w.numpy() for w in trainer.gan.generator.trainable_weights
              + trainer.gan.discriminator.trainable_weights]
    logs = trainer.train(tf.constant(1))
    assert int(trainer.global_step) == 1
    assert all(np.isfinite(float(logs[name])) for name in
               ("discriminator_loss", "generator_loss", "training_loss"))
    after = trainer.gan.generator.trainable_weights + trainer.gan.discriminator.trainable_weights
    changed = [not np.array_equal(b, a.numpy()) for b, a in zip(before, after)]
    assert sum(changed) > len(changed) // 2
    assert int(trainer.gan.generator_optimizer.iterations) == 1
    assert int(trainer.gan.discriminator_optimizer.iterations) == 1


def test_evaluation_writes_fid_scalar_image_summary_and_png(trained):
    model_dir, trainer = trained
    validation = events(os.path.join(model_dir, "validation"))
    # Named by the network that computed them (here the saved tf_keras model).
    assert [step for step, _ in validation["fid_keras_model"]] == [2]
    fid = tf.make_ndarray(validation["fid_keras_model"][0][1].tensor)
    assert np.isfinite(fid) and fid > 0
    assert "inception_score_keras_model" in validation and "fid" not in validation
    (step, image), = validation["samples"]
    assert step == 2 and image.metadata.plugin_data.plugin_name == "images"
    png = tf.io.decode_png(tf.io.read_file(os.path.join(model_dir, "samples", "samples_000002.png")))
    # 10 class rows x 2 samples of 32x32 grey.
    assert png.shape == (10 * RESOLUTION, 2 * RESOLUTION, 1)
    train = events(os.path.join(model_dir, "train"))
    assert {"discriminator_loss", "generator_loss"} <= set(train)


def test_checkpoint_restores_both_optimizers_ema_and_step_exactly(trained, feature_path):
    model_dir, trainer = trained
    params = tiny_params(feature_path, train_steps=2)
    params.override({"task": {"seed": 7}})  # a different initialisation to overwrite
    fresh = task_factory.get_task(params.task).create_trainer(params, train=False, evaluate=False)
    latest = tf.train.latest_checkpoint(model_dir)
    assert latest.endswith("ckpt-2")
    fresh.checkpoint.restore(latest).assert_existing_objects_matched()
    assert int(fresh.global_step) == 2
    for name in ("generator_optimizer", "discriminator_optimizer"):
        saved, restored = getattr(trainer.gan, name), getattr(fresh.gan, name)
        # D's optimizer steps discriminator_steps = 2 times per training step.
        assert len(saved.variables) > 2
        assert int(restored.iterations) == (2 if name == "generator_optimizer" else 4)
        for a, b in zip(saved.variables, restored.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{name} {a.name}")
    for name in ("generator", "discriminator", "ema_generator"):
        for a, b in zip(getattr(trainer.gan, name).weights, getattr(fresh.gan, name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{name} {a.name}")
    ema, generator = trainer.gan.ema_generator.trainable_weights, trainer.gan.generator.trainable_weights
    assert any(not np.array_equal(e.numpy(), g.numpy()) for e, g in zip(ema, generator))


def test_resume_continues_at_the_saved_step(trained, feature_path, tmp_path):
    model_dir, _ = trained
    resumed_dir = str(tmp_path / "resumed")
    tf.io.gfile.makedirs(resumed_dir)
    for path in glob.glob(os.path.join(model_dir, "ckpt-2*")) + [os.path.join(model_dir, "checkpoint")]:
        tf.io.gfile.copy(path, os.path.join(resumed_dir, os.path.basename(path)))
    trainer = run(tiny_params(feature_path, train_steps=3), resumed_dir, mode="train")
    assert int(trainer.global_step) == 3
    assert int(trainer.gan.generator_optimizer.iterations) == 3
    assert int(trainer.gan.discriminator_optimizer.iterations) == 6
    steps = sorted({step for values in events(os.path.join(resumed_dir, "train")).values()
                    for step, _ in values})
    assert steps == [3]


def test_mirrored_step_equals_one_device_step_on_the_global_batch(feature_path, mirrored_strategy):
    """Two replicas == one device on the concatenated batch: weights, EMA and Adam slots.

    The generator uses EvoNorm-S0 (per-sample group statistics, no batch
    statistics) so that the equality is exact up to round-off; D has no
    normalisation. Adam's first update is ≈ lr·sign(g), so the comparison of
    the slots (m = g, v ∝ g² with β1 = 0) is what checks the loss scaling.
    """
    params = tiny_params(feature_path, norm="evonorm_s0")
    task = task_factory.get_task(params.task)
    single = task.build_gan()
    strategy = mirrored_strategy
    with strategy.scope():
        orbit_trainer = task.create_trainer(params, train=False, evaluate=False)
    mirrored = orbit_trainer.gan
    for source_model, target_model in (("generator", "generator"),
                                       ("discriminator", "discriminator"),
                                       ("ema_generator", "ema_generator")):
        for source, target in zip(getattr(single, source_model).weights,
                                  getattr(mirrored, target_model).weights):
            target.assign(source.numpy())
    steps, per_replica = 2, 3  # D steps, images per replica per D step
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (steps, 2, per_replica, RESOLUTION, RESOLUTION, 1)).astype(np.float32)
    labels = rng.integers(0, 10, (steps, 2, per_replica)).astype(np.int32)
    # One device: D step k reads the concatenation over replicas of their k-th slices.
    single.train_step(tf.constant(images.reshape(-1, RESOLUTION, RESOLUTION, 1)),
                      tf.constant(labels.reshape(-1)))

    def replica_values(array):
        return strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(array[:, context.replica_id_in_sync_group].reshape(
                (-1,) + array.shape[3:])))

    # The Orbit trainer's own step: strategy.run of the replica step, EMA and step in cross-replica.
    tf.function(orbit_trainer.train_step)(iter([(replica_values(images), replica_values(labels))]))
    assert int(mirrored.step.numpy()) == int(single.step.numpy()) == 1
    assert np.isfinite(float(orbit_trainer.train_loop_end()["training_loss"]))
    for name in ("generator", "discriminator", "ema_generator"):
        for a, b in zip(getattr(single, name).trainable_weights,
                        getattr(mirrored, name).trainable_weights):
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-6,
                                       err_msg=f"{name} {a.name}")
    for name in ("generator_optimizer", "discriminator_optimizer"):
        slots = list(zip(getattr(single, name).variables, getattr(mirrored, name).variables))
        assert len(slots) > 2
        for a, b in slots:
            scale = np.abs(a.numpy()).max() + 1e-30
            np.testing.assert_allclose(b.numpy() / scale, a.numpy() / scale, atol=1e-4,
                                       err_msg=f"{name} {a.name}")


def _jpeg_example(image, label):
    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[tf.io.encode_jpeg(image, quality=100).numpy()])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    })).SerializeToString()


def test_tfrecord_inputs_centre_crop_resize_scale_and_offset_labels(tmp_path, feature_path):
    """Model Garden classification records: wide images keep their centre square."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    with tf.io.TFRecordWriter(str(tmp_path / "train-00000-of-00001")) as writer:
        for label, colour in enumerate(colours, start=1):
            image = np.zeros((40, 80, 3), np.uint8)  # borders black, centre 40x40 coloured
            image[:, 20:60] = colour
            writer.write(_jpeg_example(image, label))
    params = tiny_params(feature_path)
    params.override({"task": {
        "model": {"num_classes": 4, "image_channels": 3},
        "validation_data": {"source": "tfrecord", "input_path": str(tmp_path / "train-*"),
                            "global_batch_size": 2, "label_offset": 1},
        "train_data": {"source": "tfrecord", "input_path": str(tmp_path / "train-*"),
                       "global_batch_size": 1, "label_offset": 1}}})
    task = task_factory.get_task(params.task)
    batches = list(task.build_inputs(params.task.validation_data))
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert images.shape == (4, RESOLUTION, RESOLUTION, 3)
    np.testing.assert_array_equal(labels, [0, 1, 2, 3])
    expected = np.array(colours, np.float32) / 127.5 - 1.0
    # JPEG chroma subsampling blurs colour edges slightly; black borders would
    # pull a channel mean of 1 down to about 0.
    np.testing.assert_allclose(images.mean(axis=(1, 2)), expected, atol=0.06)
    train = next(iter(task.build_inputs(params.task.train_data)))
    assert train[0].shape == (2, RESOLUTION, RESOLUTION, 3)  # 2 D steps x batch 1


def test_keras_model_network_matches_numpy(tmp_path, feature_path):
    model = tf_keras.models.load_model(feature_path, compile=False)
    network = evaluation.keras_model_network(feature_path, "features")
    rng = np.random.default_rng(1)
    rgb = rng.uniform(-1, 1, (3, RESOLUTION, RESOLUTION, 3)).astype(np.float32)
    features, logits = (t.numpy() for t in network(rgb))
    grey = rgb.mean(axis=-1, keepdims=True).astype(np.float64)
    pooled = grey.reshape(3, 4, 2, 4, 2, 1).mean(axis=(2, 4)).reshape(3, -1)
    w1, b1 = (w.astype(np.float64) for w in model.get_layer("features").get_weights())
    w2, b2 = (w.astype(np.float64) for w in model.get_layer("logits").get_weights())
    expected_features = np.maximum(pooled @ w1 + b1, 0.0)
    np.testing.assert_allclose(features, expected_features, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits, expected_features @ w2 + b2, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="'pool'"):
        evaluation.keras_model_network(model, "pool")
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        evaluation.keras_model_network(str(tmp_path / "missing.keras"), "features")


def test_inception_feature_network_needs_a_weights_file(feature_path):
    params = tiny_params(feature_path)
    params.override({"task": {"evaluation": {"feature_network": {
        "type": "inception_v3", "weights_path": "/nonexistent/inception.h5"}}}})
    with pytest.raises(FileNotFoundError, match="/nonexistent/inception.h5"):
        task_factory.get_task(params.task).build_feature_network()
    params.override({"task": {"evaluation": {"feature_network": {
        "type": "inception_2015", "weights_path": "/nonexistent/fid.weights.h5"}}}})
    with pytest.raises(FileNotFoundError, match="/nonexistent/fid.weights.h5"):
        task_factory.get_task(params.task).build_feature_network()
    assert GANOrbitTrainer.optimizer is None
    assert biggan.FEATURE_NETWORKS == ("digits", "inception_2015", "inception_v3", "keras_model")


@pytest.mark.parametrize("name, norm", [
    ("biggan128_bn_tpu.yaml", "bn_relu"),
    ("biggan128_evonorm_b0_tpu.yaml", "evonorm_b0"),
    ("biggan128_evonorm_s0_tpu.yaml", "evonorm_s0"),
    ("biggan_digits_cpu.yaml", "evonorm_b0"),
])
def test_official_yaml_files_merge_and_validate(name, norm):
    from official.modeling import hyperparams

    experiment = "evonorm_biggan_digits" if "digits" in name else "evonorm_biggan_imagenet128"
    params = exp_factory.get_exp_config(experiment)
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "official_configs", name)
    params = hyperparams.override_params_dict(params, path, is_strict=True)
    params.validate()
    assert params.task.model.generator.norm_activation.type == norm
    if "digits" in name:
        assert params == exp_factory.get_exp_config(experiment).replace(runtime=params.runtime)
    else:
        assert params.task.train_data.global_batch_size == 2048
        assert params.runtime.distribution_strategy == "tpu"
        # The optimiser and evaluation settings are the experiment's (compare_gan's, together).
        default = exp_factory.get_exp_config(experiment).task
        assert params.task.optimization == default.optimization
        assert params.task.evaluation.standing_samples == default.evaluation.standing_samples


def test_digits_experiment_matches_the_digits_cli_defaults():
    """The documented CPU runs use `gan.train_digits`; its defaults are the embedded default."""
    from evonorm_tf.gan import train_digits

    cli = train_digits.DigitsGANConfig(model_dir="unused")
    task = exp_factory.get_exp_config("evonorm_biggan_digits").task
    generator = task.model.generator
    assert (generator.ch, task.model.discriminator.ch, generator.z_dim, generator.shared_dim,
            generator.norm_activation.type, generator.norm_activation.groups) == (
        cli.ch, cli.ch, cli.z_dim, cli.shared_dim, cli.norm_act, cli.groups)
    assert (task.train_data.global_batch_size, task.optimization.discriminator_steps,
            task.optimization.ema_decay, task.optimization.ema_start_step, task.seed) == (
        cli.batch_size, cli.discriminator_steps, cli.ema_decay, cli.ema_start_step, cli.seed)
    assert (task.evaluation.standing_samples, task.optimization.orthogonal_regularization) == (
        cli.standing_samples, cli.orthogonal_regularization)
    assert (task.model.resolution, task.model.image_channels) == (train_digits.IMAGE_SIZE, 1)
