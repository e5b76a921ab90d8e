"""Model Garden config dataclasses for Mask R-CNN with norm-act FPN and heads.

Importing this module registers the decoder builder `evonorm_fpn`, the task
config `MaskRCNNTask` (run by `NormActMaskRCNNTask`, Model Garden's Mask R-CNN
task with the norm-act heads) and the experiments
`evonorm_maskrcnn_resnetfpn_coco` (ResNet-50-FPN) and
`evonorm_maskrcnn_spinenet_coco` (SpineNet-49). Norm-acts are chosen per part:

    task.model.backbone.evonorm_resnet.norm_activation.type=evonorm_s0
    task.model.decoder.evonorm_fpn.norm_activation.type=evonorm_s0
    task.model.heads_norm_activation.type=evonorm_s0

Model Garden's model-level `task.model.norm_activation` reaches every part as
it reaches Model Garden's own backbone, FPN and heads: `use_sync_bn` →
`synchronized`, `norm_momentum` → `momentum`, `norm_epsilon` → `epsilon`,
each unless the part's own block sets it (`docs/maskrcnn.md`). As in Model
Garden, `use_sync_bn` does not reach the mask head, whose batch statistics
stay per replica unless `heads_norm_activation.synchronized` is set.
"""

import dataclasses
import math

import tf_keras
from official.core import config_definitions as cfg
from official.core import exp_factory, task_factory
from official.modeling import hyperparams
from official.vision.tasks import maskrcnn as mg_maskrcnn_task
from official.vision.configs import decoders
from official.vision.configs import maskrcnn as maskrcnn_config

from evonorm_tf.configs.backbones import Backbone, NormActivation, NormActResNet, NormActSpineNet
from evonorm_tf.configs.backbones import check_backbone, check_norm_activation
from evonorm_tf.modeling import decoders as _decoders  # noqa: F401  (registers evonorm_fpn)
from evonorm_tf.modeling.heads import maskrcnn as maskrcnn_builder


@dataclasses.dataclass
class NormActFPN(hyperparams.Config):
    """`evonorm_tf.modeling.decoders.NormActFPN` (see its docstring).

    `norm_activation` is the layer at each output level, built with
    `nonlinearity=False` (where Model Garden's FPN has BN without activation);
    `activation` is the one between the coarser levels P6 → P7;
    `use_separable_conv` is Model Garden's FPN option of that name.
    """

    num_filters: int = 256
    fusion_type: str = "sum"
    use_separable_conv: bool = False
    activation: str = "relu"
    norm_activation: NormActivation = dataclasses.field(default_factory=NormActivation)


@dataclasses.dataclass
class Decoder(decoders.Decoder):
    """Model Garden's decoder one-of plus `evonorm_fpn`."""

    evonorm_fpn: NormActFPN = dataclasses.field(default_factory=NormActFPN)


@dataclasses.dataclass
class MaskRCNN(maskrcnn_config.MaskRCNN):
    """Model Garden's Mask R-CNN model config with the norm-act one-ofs and heads.

    `heads_norm_activation` is the norm-act of the RPN, detection and mask
    heads, at every position where Model Garden's heads have BN followed by
    their activation (`evonorm_tf.modeling.heads`). Its unset fields take
    the model-level `norm_activation` values each head gets from Model
    Garden's `build_maskrcnn` (the mask head: momentum and epsilon only).
    """

    backbone: Backbone = dataclasses.field(default_factory=lambda: Backbone(type="evonorm_resnet"))
    decoder: Decoder = dataclasses.field(default_factory=lambda: Decoder(type="evonorm_fpn"))
    heads_norm_activation: NormActivation = dataclasses.field(default_factory=NormActivation)


@dataclasses.dataclass
class MaskRCNNTask(maskrcnn_config.MaskRCNNTask):
    """Model Garden's Mask R-CNN task config with the norm-act model config."""

    model: MaskRCNN = dataclasses.field(default_factory=MaskRCNN)


@task_factory.register_task_cls(MaskRCNNTask)
class NormActMaskRCNNTask(mg_maskrcnn_task.MaskRCNNTask):
    """Model Garden's Mask R-CNN task; `build_model` puts in the norm-act heads."""

    def build_model(self):
        model_config = self.task_config.model
        weight_decay = self.task_config.losses.l2_weight_decay
        # Halved as Model Garden does, to match tf.nn.l2_loss.
        l2_regularizer = tf_keras.regularizers.l2(weight_decay / 2.0) if weight_decay else None
        model = maskrcnn_builder.build_maskrcnn(
            tf_keras.layers.InputSpec(shape=[None] + list(model_config.input_size)),
            model_config,
            l2_regularizer,
        )
        if self.task_config.freeze_backbone:
            model.backbone.trainable = False
        # A symbolic call builds every head, as Model Garden's task does.
        model(
            tf_keras.Input(model_config.input_size),
            image_shape=tf_keras.layers.Input([2]),
            training=False,
        )
        return model


# COCO 2017 validation images (val2017).
COCO_VAL_EXAMPLES = 5000


@dataclasses.dataclass
class ExperimentConfig(cfg.ExperimentConfig):
    """`cfg.ExperimentConfig` whose `validate()` also checks every norm-act name.

    Model Garden calls `validate()` after merging YAML files and overrides, so
    a bad name fails there, naming the key, instead of deep inside model building.
    """

    def validate(self):
        super().validate()
        model = self.task.model
        check_backbone(model.backbone, model.norm_activation)
        if model.decoder.type == "evonorm_fpn":
            check_norm_activation(
                "task.model.decoder.evonorm_fpn.norm_activation",
                model.decoder.evonorm_fpn.norm_activation,
                model.norm_activation,
            )
        check_norm_activation("task.model.heads_norm_activation", model.heads_norm_activation, model.norm_activation)


def _from_reference(name, backbone, decoder, restrictions=()):
    """Model Garden's experiment `name` with our backbone and decoder, trained from scratch.

    The reference's task is copied into our `MaskRCNNTask` (its backbone and
    decoder dropped: theirs are other config classes), `init_checkpoint` set to
    None; runtime and trainer are the reference's. The model-level
    `norm_activation` keeps the reference's `use_sync_bn` and takes the
    EvoNorm authors' momentum 0.9 and epsilon 1e-5 (tensorflow/tpu
    `resnet_model.py` `evonorm()`), which every part then receives.
    """
    reference = exp_factory.get_exp_config(name)
    task = MaskRCNNTask()
    reference_task = reference.task.as_dict()
    reference_task["model"].pop("backbone")
    reference_task["model"].pop("decoder")
    task.override(reference_task, is_strict=True)
    task.init_checkpoint = None
    task.model.backbone = backbone
    task.model.decoder = decoder
    task.model.norm_activation.norm_momentum = 0.9
    task.model.norm_activation.norm_epsilon = 1e-5
    # Every validation image once: the last batch kept, partial if the batch does not divide 5000.
    task.validation_data.drop_remainder = False
    trainer = reference.trainer
    trainer.validation_steps = math.ceil(COCO_VAL_EXAMPLES / task.validation_data.global_batch_size)
    return ExperimentConfig(
        runtime=reference.runtime,
        task=task,
        trainer=trainer,
        restrictions=["task.train_data.is_training != None", "task.validation_data.is_training != None",
                      *restrictions],
    )


@exp_factory.register_config_factory("evonorm_maskrcnn_resnetfpn_coco")
def evonorm_maskrcnn_resnetfpn_coco() -> cfg.ExperimentConfig:
    """Model Garden's `maskrcnn_resnetfpn_coco` with EvoNorm-B0 everywhere.

    ResNet-50 (pre-activation) backbone, FPN and heads with EvoNorm-B0, trained
    from scratch (no ImageNet checkpoint: `init_checkpoint` null). Everything
    else (data, 1024² inputs, schedule, optimizer) is Model Garden's recipe.
    """
    return _from_reference(
        "maskrcnn_resnetfpn_coco",
        Backbone(type="evonorm_resnet", evonorm_resnet=NormActResNet(model_id=50, preactivation=True)),
        Decoder(type="evonorm_fpn"),
    )


@exp_factory.register_config_factory("evonorm_maskrcnn_spinenet_coco")
def evonorm_maskrcnn_spinenet_coco() -> cfg.ExperimentConfig:
    """Model Garden's `maskrcnn_spinenet_coco` with EvoNorm-B0 in the backbone and heads.

    SpineNet-49 (`evonorm_spinenet`) at 640², its levels 3…7 fed straight to
    the heads (Model Garden's `identity` decoder), trained from scratch
    (`init_checkpoint` null). The norm-acts use batch statistics over all
    replicas, as the recipe's synchronized BN (`task.model.norm_activation.use_sync_bn`;
    the mask head's stay per replica, as Model Garden's). Everything else
    (data, schedule, optimizer) is Model Garden's recipe.
    """
    spinenet = exp_factory.get_exp_config("maskrcnn_spinenet_coco").task.model.backbone.spinenet
    config = _from_reference(
        "maskrcnn_spinenet_coco",
        Backbone(
            type="evonorm_spinenet",
            evonorm_spinenet=NormActSpineNet(
                model_id=spinenet.model_id,
                min_level=spinenet.min_level,
                max_level=spinenet.max_level,
                stochastic_depth_drop_rate=spinenet.stochastic_depth_drop_rate,
                norm_activation=NormActivation(type="evonorm_b0", adjust_groups=True),
            ),
        ),
        Decoder(type="identity"),
        restrictions=[
            "task.model.min_level == task.model.backbone.evonorm_spinenet.min_level",
            "task.model.max_level == task.model.backbone.evonorm_spinenet.max_level",
        ],
    )
    config.task.model.heads_norm_activation = NormActivation(type="evonorm_b0")
    return config
