"""ImageNet classification experiments with norm-act backbones, on Model Garden's task.

Registered experiments (`--experiment=...` of `tpu_scripts/train.py` or of any
Model Garden driver that imports `evonorm_tf.configs`):

- `evonorm_resnet_imagenet`: pre-activation ResNet-50 with EvoNorm-B0, the
  authors' recipe (tensorflow/tpu `models/official/resnet`: batch 1024, 90
  epochs, SGD momentum 0.9, 0.1 per 256 images with 5 warmup epochs, ×0.1 at
  epochs 30/60/80, L2 1e-4 on weights only).
- `evonorm_efficientnet_imagenet`: EfficientNet-B0 with EvoNorm-B0, the
  EfficientNet authors' recipe (tensorflow/tpu `models/official/efficientnet`:
  batch 2048, 350 epochs, RMSProp, 0.016 per 256 images decayed ×0.97 every
  2.4 epochs, 5 warmup epochs, EMA 0.9999, label smoothing 0.1, L2 1e-5).

The YAML files in `official_configs/` are short overrides of these. Both run
Model Garden's own `ImageClassificationTask`; the task config below only
widens the backbone one-of so YAML and `--params_override` accept our keys.
"""

import dataclasses
import math
import os

from official.core import config_definitions as cfg
from official.core import exp_factory, task_factory
from official.modeling import optimization
from official.vision.configs import common as mg_common
from official.vision.configs import image_classification as mg_image_classification
from official.vision.tasks import image_classification as mg_image_classification_task

from evonorm_tf.configs import backbones

IMAGENET_TRAIN_EXAMPLES = 1281167
IMAGENET_VAL_EXAMPLES = 50000
IMAGENET_INPUT_PATH_BASE = "imagenet-2012-tfrecord"
# ImageNet TFRecords in the tensorflow/tpu format carry labels 1..1000; 0 is unused.
IMAGENET_NUM_CLASSES = 1001


@dataclasses.dataclass
class ImageClassificationModel(mg_image_classification.ImageClassificationModel):
    backbone: backbones.Backbone = dataclasses.field(
        default_factory=lambda: backbones.Backbone(type="evonorm_resnet")
    )


@dataclasses.dataclass
class ImageClassificationTask(mg_image_classification.ImageClassificationTask):
    """Model Garden's classification task config with the norm-act backbones."""

    model: ImageClassificationModel = dataclasses.field(default_factory=ImageClassificationModel)


# The config subclass runs Model Garden's own task class.
task_factory.register_task_cls(ImageClassificationTask)(
    mg_image_classification_task.ImageClassificationTask
)


@dataclasses.dataclass
class ExperimentConfig(cfg.ExperimentConfig):
    """`cfg.ExperimentConfig` whose `validate()` also checks the norm-act and model id.

    Model Garden calls `validate()` after merging YAML files and overrides, so
    `...norm_activation.type=evonorm_x` fails there, naming the key and the
    valid names, instead of deep inside model building.
    """

    def validate(self):
        super().validate()
        backbones.check_backbone(self.task.model.backbone, self.task.model.norm_activation)


def _data(split_pattern, batch_size, is_training):
    # Validation keeps its last, partial batch (Model Garden's imagenet_resnet50_tpu.yaml), so
    # `validation_steps(batch_size)` steps evaluate every image exactly once.
    return mg_image_classification.DataConfig(
        input_path=os.path.join(IMAGENET_INPUT_PATH_BASE, split_pattern),
        is_training=is_training,
        global_batch_size=batch_size,
        drop_remainder=is_training,
    )


def _authors_norm_activation():
    """Model Garden's model-level norm options, which reach every norm-act layer the
    backbone's block leaves unset: the EvoNorm authors' momentum 0.9 and epsilon 1e-5
    (tensorflow/tpu `resnet_model.py` `evonorm()`), per-replica batch statistics."""
    return mg_common.NormActivation(norm_momentum=0.9, norm_epsilon=1e-5, use_sync_bn=False)


def validation_steps(batch_size, examples=IMAGENET_VAL_EXAMPLES):
    """Steps that evaluate each of `examples` images once, the last batch partial: ceil(examples / batch)."""
    return math.ceil(examples / batch_size)


_RESTRICTIONS = [
    "task.train_data.is_training != None",
    "task.validation_data.is_training != None",
]


@exp_factory.register_config_factory("evonorm_resnet_imagenet")
def evonorm_resnet_imagenet() -> cfg.ExperimentConfig:
    """Pre-activation ResNet-50 + EvoNorm-B0 on ImageNet, authors' recipe."""
    batch_size = 1024  # resnet_config.py train_batch_size (128 per core on 8 cores)
    steps_per_epoch = IMAGENET_TRAIN_EXAMPLES // batch_size  # 1251
    learning_rate = 0.1 * batch_size / 256  # base_learning_rate 0.1 per 256 images
    return ExperimentConfig(
        runtime=cfg.RuntimeConfig(enable_xla=True),
        task=ImageClassificationTask(
            model=ImageClassificationModel(
                num_classes=IMAGENET_NUM_CLASSES,
                input_size=[224, 224, 3],
                norm_activation=_authors_norm_activation(),
                backbone=backbones.Backbone(
                    type="evonorm_resnet",
                    evonorm_resnet=backbones.NormActResNet(model_id=50, preactivation=True),
                ),
            ),
            losses=mg_image_classification.Losses(l2_weight_decay=1e-4, label_smoothing=0.0),
            train_data=_data("train*", batch_size, is_training=True),
            validation_data=_data("valid*", batch_size, is_training=False),
        ),
        trainer=cfg.TrainerConfig(
            steps_per_loop=steps_per_epoch,
            summary_interval=steps_per_epoch,
            checkpoint_interval=steps_per_epoch,
            train_steps=90 * steps_per_epoch,  # 112590
            validation_steps=validation_steps(batch_size),  # 49: 48 x 1024 + 848
            validation_interval=steps_per_epoch,
            optimizer_config=optimization.OptimizationConfig({
                "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9}},
                "learning_rate": {
                    "type": "stepwise",
                    "stepwise": {
                        "boundaries": [e * steps_per_epoch for e in (30, 60, 80)],
                        "values": [learning_rate * m for m in (1.0, 0.1, 0.01, 0.001)],
                    },
                },
                "warmup": {
                    "type": "linear",
                    "linear": {"warmup_steps": 5 * steps_per_epoch, "warmup_learning_rate": 0.0},
                },
            }),
        ),
        restrictions=list(_RESTRICTIONS),
    )


@exp_factory.register_config_factory("evonorm_efficientnet_imagenet")
def evonorm_efficientnet_imagenet() -> cfg.ExperimentConfig:
    """EfficientNet-B0 + EvoNorm-B0 on ImageNet, the EfficientNet authors' recipe."""
    batch_size = 2048  # efficientnet/main.py train_batch_size
    steps_per_epoch = IMAGENET_TRAIN_EXAMPLES / batch_size  # 625.57, as main.py
    return ExperimentConfig(
        runtime=cfg.RuntimeConfig(enable_xla=True),
        task=ImageClassificationTask(
            model=ImageClassificationModel(
                num_classes=IMAGENET_NUM_CLASSES,
                input_size=[224, 224, 3],
                dropout_rate=0.2,
                norm_activation=_authors_norm_activation(),
                backbone=backbones.Backbone(
                    type="evonorm_efficientnet",
                    evonorm_efficientnet=backbones.NormActEfficientNet(model_id="b0"),
                ),
            ),
            losses=mg_image_classification.Losses(l2_weight_decay=1e-5, label_smoothing=0.1),
            train_data=_data("train*", batch_size, is_training=True),
            validation_data=_data("valid*", 1024, is_training=False),
        ),
        trainer=cfg.TrainerConfig(
            steps_per_loop=int(steps_per_epoch),
            summary_interval=int(steps_per_epoch),
            checkpoint_interval=int(steps_per_epoch),
            train_steps=218949,  # main.py: ~350 epochs at batch 2048
            validation_steps=validation_steps(1024),
            validation_interval=int(steps_per_epoch),
            optimizer_config=optimization.OptimizationConfig({
                "optimizer": {
                    "type": "rmsprop",
                    "rmsprop": {"rho": 0.9, "momentum": 0.9, "epsilon": 0.001},
                },
                "ema": {"average_decay": 0.9999, "trainable_weights_only": False},
                "learning_rate": {
                    "type": "exponential",
                    "exponential": {
                        "initial_learning_rate": 0.016 * batch_size / 256,
                        "decay_steps": int(2.4 * steps_per_epoch),
                        "decay_rate": 0.97,
                        "staircase": True,
                    },
                },
                "warmup": {
                    "type": "linear",
                    "linear": {"warmup_steps": int(5 * steps_per_epoch), "warmup_learning_rate": 0.0},
                },
            }),
        ),
        restrictions=list(_RESTRICTIONS),
    )
