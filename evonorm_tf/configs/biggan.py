"""BigGAN experiments with norm-act generators, for Model Garden drivers.

Registered experiments (`--experiment=...` of `tpu_scripts/train.py`):

- `evonorm_biggan_imagenet128`: BigGAN at 128x128 on ImageNet TFRecords
  (Model Garden's classification format, `image/encoded` + `image/class/label`,
  labels 1..1000), the paper's settings: ch 96, z 120 (hierarchical), shared
  embedding 128, hinge loss, and compare_gan's optimiser settings taken
  together (`biggan_imagenet128.gin` and `ModularGAN`'s defaults):
  Adam(β1 = 0, β2 = 0.999, ε = 1e-8) with G lr 1e-4 and D lr 5e-4, 2 D steps
  per G step, batch 2048, EMA of G 0.9999 from step 40000, standing
  statistics from 204,800 samples at evaluation. The
  generator's norm-act defaults to class-conditional BN-ReLU;
  `task.model.generator.norm_activation.type=evonorm_b0` swaps it.
- `evonorm_biggan_digits`: the embedded default: scikit-learn's digits
  upsampled to 32x32 (grey), a ch-16 BigGAN with EvoNorm-B0, FID/IS from a
  small classifier trained on the digits at start-up
  (`evaluation.digits_feature_network`). Same settings as
  `python -m evonorm_tf.gan.train_digits`.

Both run `evonorm_tf.configs.biggan_task.BigGANTask` (two optimizers, its own Orbit
trainer; see that module). `ExperimentConfig.validate()` (called by Model
Garden after YAML files and overrides are merged) rejects bad values with a
ValueError naming the key.
"""

import dataclasses
from typing import Tuple

from official.core import config_definitions as cfg
from official.core import exp_factory
from official.modeling import hyperparams

from evonorm_tf.configs import backbones
from evonorm_tf.factory import NORM_ACT_NAMES
from evonorm_tf.gan import architectures

__all__ = [
    "BigGANModel",
    "BigGANTask",
    "DataConfig",
    "DiscriminatorConfig",
    "ExperimentConfig",
    "FeatureNetwork",
    "GANEvaluation",
    "GANOptimization",
    "GeneratorConfig",
    "check_task",
    "evonorm_biggan_digits",
    "evonorm_biggan_imagenet128",
]

DATA_SOURCES = ("digits", "tfrecord")
FEATURE_NETWORKS = ("digits", "inception_2015", "inception_v3", "keras_model")
IMAGENET_TRAIN_EXAMPLES = 1281167
IMAGENET_VAL_EXAMPLES = 50000


@dataclasses.dataclass
class GeneratorConfig(hyperparams.Config):
    """`evonorm_tf.gan.Generator` options; `norm_activation` fills every norm-act.

    Of `norm_activation`, each layer receives the options it accepts
    (`momentum`, `synchronized` for BN and B-series; `groups` for GN and
    S-series; `groups` must divide every generator width).
    """

    ch: int = 96
    z_dim: int = 120
    shared_dim: int = 128
    use_sn: bool = True
    norm_activation: backbones.NormActivation = dataclasses.field(
        default_factory=lambda: backbones.NormActivation(type="bn_relu"))


@dataclasses.dataclass
class DiscriminatorConfig(hyperparams.Config):
    ch: int = 96
    use_sn: bool = True


@dataclasses.dataclass
class BigGANModel(hyperparams.Config):
    resolution: int = 128
    num_classes: int = 1000
    image_channels: int = 3
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = dataclasses.field(default_factory=DiscriminatorConfig)


@dataclasses.dataclass
class GANOptimization(hyperparams.Config):
    """Two Adams, D steps per G step and the EMA of G (see `gan.training.GANTrainer`)."""

    generator_learning_rate: float = 1e-4
    discriminator_learning_rate: float = 4e-4
    beta_1: float = 0.0
    beta_2: float = 0.999
    epsilon: float = 1e-6
    discriminator_steps: int = 2
    ema_decay: float = 0.9999
    ema_start_step: int = 20000
    orthogonal_regularization: float = 0.0  # BigGAN's β (paper: 1e-4); 0 = off


@dataclasses.dataclass
class DataConfig(cfg.DataConfig):
    """Real images in [-1, 1] and int labels.

    `source`: `"tfrecord"` (Model Garden classification TFRecords at
    `input_path`, a glob or comma-separated globs: JPEG/PNG `image/encoded`,
    `image/class/label` minus `label_offset`; centre-cropped to a square and
    resized to `image_size`) or `"digits"` (scikit-learn's digits, train
    split when `is_training`, else the 360-image test split).
    `global_batch_size` is the batch of *one* D step: a training step reads
    `discriminator_steps` such batches. Remainders are dropped.
    """

    source: str = "tfrecord"
    image_size: int = 128
    label_offset: int = 1
    shuffle_buffer_size: int = 10000
    cycle_length: int = 16


@dataclasses.dataclass
class FeatureNetwork(hyperparams.Config):
    """The network of FID (features) and IS (logits).

    `type`: `"inception_2015"` (the 2015 FID Inception graph's layout, the
    network of published FIDs, from `weights_path` converted as in
    `gan.fid_inception`; metrics `fid_inception_2015`, ...), `"inception_v3"`
    (tf_keras InceptionV3 with `weights_path`, a user-supplied weights file,
    and `classes` outputs; `fid_inception_v3_keras`, not comparable with
    published FIDs); nothing is downloaded; a missing file raises
    FileNotFoundError at the first evaluation;
    `"keras_model"` (any saved tf_keras model at `model_path`: features from
    layer `feature_layer`, logits from its output) or `"digits"` (a small
    classifier trained on scikit-learn's digits at start-up).
    """

    type: str = "inception_v3"
    weights_path: str = ""
    classes: int = 1008
    model_path: str = ""
    feature_layer: str = ""


@dataclasses.dataclass
class GANEvaluation(hyperparams.Config):
    """FID and IS of EMA-generator samples (one per validation image, same labels).

    `grid_classes` rows (evenly spaced class ids) × `grid_per_class` columns
    of samples go to `<model_dir>/samples/samples_<step>.png` and to
    TensorBoard. `seed` fixes the latents, so evaluations are comparable.
    Before each evaluation the EMA generator's batch statistics (BN,
    EvoNorm-B*) are recomputed from `standing_samples` of its own samples in
    batches of `standing_batch_size` (0: the training batch); 0 samples keeps
    the EMA of the moving statistics. `truncation` > 0 draws the evaluated
    latents (and those of the standing statistics) from the normal truncated
    at ±`truncation`; 0 is the full normal. Metrics are named by the feature
    network (`fid_<name>`, `inception_score_<name>`). `truncation_curve`
    (thresholds > 0) adds, at every evaluation, the same metrics with the
    latents truncated at each threshold (standing statistics recomputed at
    that threshold), named `<metric>_truncation_<t>` (BigGAN's FID/IS curve,
    arXiv:1809.11096 section 3.1).
    """

    feature_network: FeatureNetwork = dataclasses.field(default_factory=FeatureNetwork)
    inception_score_splits: int = 10
    grid_classes: int = 10
    grid_per_class: int = 8
    seed: int = 0
    standing_samples: int = 2048
    standing_batch_size: int = 0
    truncation: float = 0.0
    truncation_curve: Tuple[float, ...] = ()


@dataclasses.dataclass
class BigGANTask(cfg.TaskConfig):
    model: BigGANModel = dataclasses.field(default_factory=BigGANModel)
    optimization: GANOptimization = dataclasses.field(default_factory=GANOptimization)
    train_data: DataConfig = dataclasses.field(
        default_factory=lambda: DataConfig(is_training=True))
    validation_data: DataConfig = dataclasses.field(
        default_factory=lambda: DataConfig(is_training=False))
    evaluation: GANEvaluation = dataclasses.field(default_factory=GANEvaluation)
    seed: int = 0
    jit_compile: bool = False


def _fail(key, message, value):
    raise ValueError(f"{key} {message}, received {value!r}")


def check_task(task):
    """Raises ValueError naming the first bad value of a `BigGANTask` config."""
    model, generator = task.model, task.model.generator
    if model.resolution not in architectures.GENERATOR_SPECS:
        _fail("task.model.resolution", f"must be one of {sorted(architectures.GENERATOR_SPECS)}",
              model.resolution)
    for key, value in (("task.model.num_classes", model.num_classes),
                       ("task.model.image_channels", model.image_channels),
                       ("task.model.generator.ch", generator.ch),
                       ("task.model.generator.z_dim", generator.z_dim),
                       ("task.model.generator.shared_dim", generator.shared_dim),
                       ("task.model.discriminator.ch", model.discriminator.ch)):
        if not isinstance(value, int) or value < 1:
            _fail(key, "must be a positive int", value)
    norm = generator.norm_activation.type
    if not isinstance(norm, str) or norm.strip().lower() not in NORM_ACT_NAMES:
        _fail("task.model.generator.norm_activation.type",
              f"must be one of {', '.join(NORM_ACT_NAMES)}", norm)
    chunks = len(architectures.GENERATOR_SPECS[model.resolution].multipliers)
    if generator.z_dim % chunks:
        _fail("task.model.generator.z_dim",
              f"must be divisible by {chunks} (hierarchical latent at {model.resolution}x"
              f"{model.resolution})", generator.z_dim)
    optimization = task.optimization
    for key in ("generator_learning_rate", "discriminator_learning_rate", "epsilon"):
        value = getattr(optimization, key)
        if not value > 0:
            _fail(f"task.optimization.{key}", "must be > 0", value)
    for key in ("beta_1", "beta_2", "ema_decay"):
        value = getattr(optimization, key)
        if not 0.0 <= value < 1.0:
            _fail(f"task.optimization.{key}", "must be in [0, 1)", value)
    if not isinstance(optimization.discriminator_steps, int) or optimization.discriminator_steps < 1:
        _fail("task.optimization.discriminator_steps", "must be a positive int",
              optimization.discriminator_steps)
    for name in ("train_data", "validation_data"):
        data = getattr(task, name)
        if data.source not in DATA_SOURCES:
            _fail(f"task.{name}.source", f"must be one of {DATA_SOURCES}", data.source)
        if data.source == "tfrecord" and not data.input_path:
            _fail(f"task.{name}.input_path", "must name TFRecord files for source tfrecord",
                  data.input_path)
        if not isinstance(data.global_batch_size, int) or data.global_batch_size < 1:
            _fail(f"task.{name}.global_batch_size", "must be a positive int",
                  data.global_batch_size)
        if data.image_size != model.resolution:
            _fail(f"task.{name}.image_size", f"must equal task.model.resolution={model.resolution}",
                  data.image_size)
    network = task.evaluation.feature_network
    if network.type not in FEATURE_NETWORKS:
        _fail("task.evaluation.feature_network.type", f"must be one of {FEATURE_NETWORKS}",
              network.type)
    # Paths are checked when the network is built (first evaluation), so
    # training alone needs no weights file.
    splits = task.evaluation.inception_score_splits
    if not isinstance(splits, int) or splits < 1:
        _fail("task.evaluation.inception_score_splits", "must be a positive int", splits)
    evaluation = task.evaluation
    for key in ("standing_samples", "standing_batch_size"):
        value = getattr(evaluation, key)
        if not isinstance(value, int) or value < 0:
            _fail(f"task.evaluation.{key}", "must be an int >= 0", value)
    if evaluation.standing_batch_size == 1:
        _fail("task.evaluation.standing_batch_size", "must be 0 or >= 2", 1)
    if not evaluation.truncation >= 0:
        _fail("task.evaluation.truncation", "must be >= 0 (0: no truncation)", evaluation.truncation)
    for threshold in evaluation.truncation_curve or ():
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
                0 < threshold < float("inf")):
            _fail("task.evaluation.truncation_curve", "must hold thresholds > 0", threshold)
    if not optimization.orthogonal_regularization >= 0:
        _fail("task.optimization.orthogonal_regularization", "must be >= 0",
              optimization.orthogonal_regularization)


@dataclasses.dataclass
class ExperimentConfig(cfg.ExperimentConfig):
    """`cfg.ExperimentConfig` whose `validate()` also runs `check_task`."""

    task: BigGANTask = dataclasses.field(default_factory=BigGANTask)

    def validate(self):
        super().validate()
        check_task(self.task)


@exp_factory.register_config_factory("evonorm_biggan_imagenet128")
def evonorm_biggan_imagenet128() -> cfg.ExperimentConfig:
    """BigGAN 128x128 on ImageNet TFRecords, the paper's settings (module docstring)."""
    batch_size = 2048  # compare_gan biggan_imagenet128.gin; BigGAN-PyTorch 256 x 8 accumulations
    eval_batch = 1000
    return ExperimentConfig(
        task=BigGANTask(
            model=BigGANModel(resolution=128, num_classes=1000),
            # compare_gan's settings taken together: biggan_imagenet128.gin (lrs 1e-4 / 5e-4,
            # Adam β1 0, β2 0.999, 2 D steps) and ModularGAN's defaults (Adam ε 1e-8 of
            # tf.train.AdamOptimizer, EMA 0.9999 from step 40000); no orthogonal regularisation.
            optimization=GANOptimization(discriminator_learning_rate=5e-4, epsilon=1e-8,
                                         ema_decay=0.9999, ema_start_step=40000),
            train_data=DataConfig(input_path="imagenet-2012-tfrecord/train*", is_training=True,
                                  global_batch_size=batch_size),
            validation_data=DataConfig(input_path="imagenet-2012-tfrecord/valid*",
                                       is_training=False, global_batch_size=eval_batch),
            evaluation=GANEvaluation(feature_network=FeatureNetwork(type="inception_2015"),
                                     standing_samples=204800),  # compare_gan eval_gan_lib
        ),
        trainer=cfg.TrainerConfig(
            train_steps=250000,  # compare_gan biggan_imagenet128.gin training_steps
            steps_per_loop=500,
            summary_interval=500,
            checkpoint_interval=2500,
            validation_interval=10000,
            validation_steps=IMAGENET_VAL_EXAMPLES // eval_batch,
            max_to_keep=5,
        ),
    )


@exp_factory.register_config_factory("evonorm_biggan_digits")
def evonorm_biggan_digits() -> cfg.ExperimentConfig:
    """Class-conditional 32x32 digits on CPU, the settings of `gan.train_digits`."""
    return ExperimentConfig(
        task=BigGANTask(
            model=BigGANModel(
                resolution=32, num_classes=10, image_channels=1,
                generator=GeneratorConfig(ch=16, z_dim=64, shared_dim=32,
                                          norm_activation=backbones.NormActivation(
                                              type="evonorm_b0", groups=8)),
                discriminator=DiscriminatorConfig(ch=16)),
            # EMA 0.99 from step 50: BigGAN's 0.9999 suits 100k+ steps, a CPU run has hundreds.
            optimization=GANOptimization(ema_decay=0.99, ema_start_step=50),
            train_data=DataConfig(source="digits", image_size=32, is_training=True,
                                  global_batch_size=32, shuffle_buffer_size=1437),
            validation_data=DataConfig(source="digits", image_size=32, is_training=False,
                                       global_batch_size=40),
            evaluation=GANEvaluation(feature_network=FeatureNetwork(type="digits"),
                                     inception_score_splits=1, grid_per_class=8),
        ),
        trainer=cfg.TrainerConfig(
            train_steps=1000,
            steps_per_loop=50,
            summary_interval=50,
            checkpoint_interval=100,
            validation_interval=100,
            validation_steps=-1,  # the whole 360-image test split
            max_to_keep=2,
        ),
    )
