"""Model Garden config dataclasses for the norm-act backbones.

A norm-act is chosen per backbone, in its own `norm_activation` block:

    task.model.backbone.type=evonorm_resnet
    task.model.backbone.evonorm_resnet.norm_activation.type=evonorm_s0
    task.model.backbone.evonorm_efficientnet.norm_activation.type=bn_silu

Model Garden's model-level `task.model.norm_activation` (plain BN options) is
not read by these backbones; it only affects Model Garden's optional head BN
(`add_head_batch_norm`, off by default).
"""

import dataclasses
from typing import Optional

from official.modeling import hyperparams
from official.vision.configs import backbones

from evonorm_tf.configs.nf_resnet import NFResNet
from evonorm_tf.factory import NORM_ACT_NAMES


@dataclasses.dataclass
class NormActivation(hyperparams.Config):
    """The norm-act layer of a backbone; each layer receives the options it accepts.

    Attributes:
      type: a name of `evonorm_tf.NORM_ACT_NAMES` (`bn_relu`, `bn_silu`,
        `gn_relu`, `gn_silu`, `frn_tlu`, `evonorm_b0`…`b2`, `evonorm_s0`…`s2`).
      momentum: moving-average momentum (BN and B-series). 0.9 as the authors'
        code; EfficientNet's BN uses 0.99.
      epsilon: added inside square roots. 1e-5 as the authors' code.
      groups: group count (GN and S-series). A layer whose channel count it
        does not divide is an error at model construction naming the layer,
        unless `adjust_groups` is true.
      synchronized: batch statistics over all replicas (BN and B-series).
        False (default): per-replica statistics, as the authors' TPU runs.
      adjust_groups: true: a layer whose channels `groups` does not divide
        uses the largest divisor below it (the authors' rule; EfficientNet's
        24-, 40- and 144-channel layers need it with 32 groups). Recorded in
        the saved `params.yaml` with the rest of the config.
    """

    type: str = "evonorm_b0"
    momentum: float = 0.9
    epsilon: float = 1e-5
    groups: int = 32
    synchronized: bool = False
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
    """

    model_id: str = "49"
    min_level: int = 3
    max_level: int = 7
    stochastic_depth_drop_rate: float = 0.0
    zero_init_residual: bool = False
    activation: str = "relu"
    norm_activation: NormActivation = dataclasses.field(default_factory=NormActivation)


@dataclasses.dataclass
class Backbone(backbones.Backbone):
    """Model Garden's backbone one-of plus `evonorm_resnet`, `evonorm_efficientnet`, `evonorm_spinenet`."""

    evonorm_resnet: NormActResNet = dataclasses.field(default_factory=NormActResNet)
    evonorm_efficientnet: NormActEfficientNet = dataclasses.field(default_factory=NormActEfficientNet)
    nf_resnet: NFResNet = dataclasses.field(default_factory=NFResNet)
    evonorm_spinenet: NormActSpineNet = dataclasses.field(default_factory=NormActSpineNet)


def check_norm_activation(key, config):
    """Raises ValueError naming `key.<field>` for a bad field of a `NormActivation` config."""
    name = config.type
    if not isinstance(name, str) or name.strip().lower() not in NORM_ACT_NAMES:
        raise ValueError(f"{key}.type={name!r} is not a norm-act; valid names: {', '.join(NORM_ACT_NAMES)}")
    groups = config.groups
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{key}.groups must be a positive integer, received {groups!r}")
    epsilon = config.epsilon
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
        raise ValueError(f"{key}.epsilon must be a number > 0, received {epsilon!r}")
    momentum = config.momentum
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise ValueError(f"{key}.momentum must be a number in [0, 1), received {momentum!r}")
    for flag in ("synchronized", "adjust_groups"):
        if not isinstance(getattr(config, flag), bool):
            raise ValueError(f"{key}.{flag} must be true or false, received {getattr(config, flag)!r}")


def check_backbone(backbone):
    """Raises ValueError for a bad norm-act field or an unknown model id in the active sub-config."""
    if backbone.type not in ("evonorm_resnet", "evonorm_efficientnet", "evonorm_spinenet"):
        return
    from evonorm_tf.modeling.backbones import EFFICIENTNET_SCALING, RESNET_SPECS, SPINENET_SCALING

    config = backbone.get()
    prefix = f"task.model.backbone.{backbone.type}"
    check_norm_activation(f"{prefix}.norm_activation", config.norm_activation)
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
