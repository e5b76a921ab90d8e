"""Model Garden config dataclasses for the norm-act backbones.

A norm-act is chosen per backbone, in its own `norm_activation` block, which
carries the layer `type` (and `groups`):

    task.model.backbone.type=evonorm_resnet
    task.model.backbone.evonorm_resnet.norm_activation.type=evonorm_s0
    task.model.backbone.evonorm_efficientnet.norm_activation.type=bn_silu

Model Garden's model-level `task.model.norm_activation` reaches every
norm-act layer as it reaches Model Garden's own backbones: `use_sync_bn` →
`synchronized` (batch statistics over all replicas), `norm_momentum` →
`momentum`, `norm_epsilon` → `epsilon`. One precedence holds for each of the
three: the backbone's own field if set, else the model-level field, else the
layer default (`evonorm_tf.modeling.norm_act.options_from_config`). The
model-level `activation` is not read: the nonlinearity is part of the
norm-act type (`bn_relu`, `bn_silu`, ...). Layers without batch statistics
(S-series, GN, FRN) ignore `momentum` and `synchronized`; the NF-ResNet has
no normalization layer at all.
"""

import dataclasses
from typing import Optional

from official.modeling import hyperparams
from official.vision.configs import backbones

from evonorm_tf.configs.nf_resnet import NFResNet


@dataclasses.dataclass
class NormActivation(hyperparams.Config):
    """The norm-act layer of one model part; each layer receives the options it accepts.

    `momentum`, `epsilon` and `synchronized` are null unless set here: a null
    field takes Model Garden's model-level `task.model.norm_activation` value
    (`norm_momentum`, `norm_epsilon`, `use_sync_bn`), and without one the
    layer default. A value set here wins over the model-level one.

    Attributes:
      type: a norm-act name (`bn_relu`, `bn_silu`, `gn_relu`, `gn_silu`,
        `frn_tlu`, `evonorm_b0`…`b2`, `evonorm_s0`…`s2`, see
        `evonorm_tf.NORM_ACT_NAMES`) or a searched layer `graph:<canonical>`.
      momentum: moving-average momentum (BN and B-series). Layer default 0.9,
        as the authors' code.
      epsilon: added inside square roots. Layer default 1e-5, as the authors' code.
      groups: group count (GN and S-series). Unset: 32, lowered where it
        does not divide a layer's channels (the authors' rule, logged). A
        value given here that does not divide a layer's channels is an error
        at model construction naming the layer, unless `adjust_groups` is true.
      synchronized: batch statistics over all replicas (BN and B-series).
        Layer default False (per-replica statistics, as the authors' TPU runs).
      adjust_groups: true: a layer whose channels `groups` does not divide
        uses the largest divisor below it (the authors' rule; EfficientNet's
        24-, 40- and 144-channel layers need it with 32 groups), logged once
        per model with the layers it changed and recorded in each layer's
        config. Recorded in the saved `params.yaml` with the rest of the config.
    """

    type: str = "evonorm_b0"
    momentum: Optional[float] = None
    epsilon: Optional[float] = None
    groups: Optional[int] = None
    synchronized: Optional[bool] = None
    adjust_groups: bool = False


@dataclasses.dataclass
class NormActResNet(hyperparams.Config):
    """`evonorm_tf.modeling.NormActResNet` (see its docstring).

    `preactivation: true` is the v2 form the paper uses for EvoNorms;
    `false` the v1.5 form of Model Garden's ResNet (BN-ReLU baselines).
    """

    model_id: int = 50
    preactivation: bool = True
    width_multiplier: float = 1.0
    zero_init_residual: bool = True
    activation: str = "relu"
    norm_activation: NormActivation = dataclasses.field(default_factory=NormActivation)


@dataclasses.dataclass
class NormActEfficientNet(hyperparams.Config):
    """`evonorm_tf.modeling.NormActEfficientNet` (see its docstring).

    `width_scale` / `depth_scale` override the model's scaling (null: those
    of `model_id`), for small smoke-test models. Its norm-act adjusts group
    counts by default (`adjust_groups: true`): its 24-, 40-, 112- and
    144-channel layers are not multiples of 32.
    """

    model_id: str = "b0"
    se_ratio: float = 0.25
    stochastic_depth_drop_rate: float = 0.2
    width_scale: Optional[float] = None
    depth_scale: Optional[float] = None
    norm_activation: NormActivation = dataclasses.field(
        default_factory=lambda: NormActivation(adjust_groups=True)
    )


@dataclasses.dataclass
class NormActSpineNet(hyperparams.Config):
    """`evonorm_tf.modeling.NormActSpineNet` (see its docstring).

    `model_id` is a key of `SPINENET_SCALING` ('49S', '49', '96', '143',
    '143L', '190'); `min_level`/`max_level` must equal the Mask R-CNN model's.
    Its norm-act adjusts group counts by default (`adjust_groups: true`): the
    scaled block widths (e.g. 164 channels in SpineNet-49S) are not multiples
    of the usual group counts.
    """

    model_id: str = "49"
    min_level: int = 3
    max_level: int = 7
    stochastic_depth_drop_rate: float = 0.0
    zero_init_residual: bool = False
    activation: str = "relu"
    norm_activation: NormActivation = dataclasses.field(
        default_factory=lambda: NormActivation(adjust_groups=True)
    )


@dataclasses.dataclass
class Backbone(backbones.Backbone):
    """Model Garden's backbone one-of plus `evonorm_resnet`, `evonorm_efficientnet`, `evonorm_spinenet`."""

    evonorm_resnet: NormActResNet = dataclasses.field(default_factory=NormActResNet)
    evonorm_efficientnet: NormActEfficientNet = dataclasses.field(default_factory=NormActEfficientNet)
    nf_resnet: NFResNet = dataclasses.field(default_factory=NFResNet)
    evonorm_spinenet: NormActSpineNet = dataclasses.field(default_factory=NormActSpineNet)


def check_norm_activation(key, norm_act_config, model_norm_activation=None):
    """Raises ValueError naming `key` when the norm-act factory rejects this config.

    The check builds the factory the model will build (`NormActFactory`), so
    it accepts every name the factory accepts, `graph:<canonical>` names of
    `evonorm_tf.search` included, and rejects bad option values.
    """
    from evonorm_tf.modeling import norm_act as norm_act_lib

    if not isinstance(norm_act_config.adjust_groups, bool):
        raise ValueError(f"{key}.adjust_groups must be true or false, received {norm_act_config.adjust_groups!r}")
    groups = norm_act_config.groups
    if groups is not None and (isinstance(groups, bool) or not isinstance(groups, int) or groups < 1):
        raise ValueError(f"{key}.groups must be a positive integer, received {groups!r}")
    epsilon, momentum = norm_act_config.epsilon, norm_act_config.momentum
    if epsilon is not None and (isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0):
        raise ValueError(f"{key}.epsilon must be > 0, received epsilon={epsilon!r}")
    if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, (int, float))
                                 or not 0 <= momentum < 1):
        raise ValueError(f"{key}.momentum must be in [0, 1), received momentum={momentum!r}")
    try:
        norm_act_lib.norm_act_factory_from_config(norm_act_config, model_norm_activation=model_norm_activation)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{key}.type={norm_act_config.type!r}: {error}") from None


BACKBONES_WITH_NORM_ACT = ("evonorm_resnet", "evonorm_efficientnet", "evonorm_spinenet")


def check_backbone(backbone, model_norm_activation=None):
    """Raises ValueError for a norm-act the factory rejects or an unknown model id in the active sub-config.

    `model_norm_activation` is Model Garden's `task.model.norm_activation`
    (checked together with the backbone's own options), or None.
    """
    if backbone.type not in BACKBONES_WITH_NORM_ACT:
        return
    from evonorm_tf.modeling.backbones import EFFICIENTNET_SCALING, RESNET_SPECS, SPINENET_SCALING

    config = backbone.get()
    prefix = f"task.model.backbone.{backbone.type}"
    check_norm_activation(f"{prefix}.norm_activation", config.norm_activation, model_norm_activation)
    valid_ids = {
        "evonorm_resnet": RESNET_SPECS,
        "evonorm_efficientnet": EFFICIENTNET_SCALING,
        "evonorm_spinenet": SPINENET_SCALING,
    }[backbone.type]
    # SpineNet ids are strings; a command-line override `model_id=96` arrives as an int.
    model_id = str(config.model_id) if backbone.type == "evonorm_spinenet" else config.model_id
    if model_id not in valid_ids:
        raise ValueError(
            f"{prefix}.model_id={config.model_id!r} is not one of {sorted(valid_ids)}"
        )
