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
      groups: requested group count (GN and S-series); channel counts it does
        not divide use the largest divisor below it.
      synchronized: batch statistics over all replicas (BN and B-series).
        False (default): per-replica statistics, as the authors' TPU runs.
    """

    type: str = "evonorm_b0"
    momentum: float = 0.9
    epsilon: float = 1e-5
    groups: int = 32
    synchronized: bool = False


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
    of `model_id`), for small smoke-test models.
    """

    model_id: str = "b0"
    se_ratio: float = 0.25
    stochastic_depth_drop_rate: float = 0.2
    width_scale: Optional[float] = None
    depth_scale: Optional[float] = None
    norm_activation: NormActivation = dataclasses.field(default_factory=NormActivation)


@dataclasses.dataclass
class Backbone(backbones.Backbone):
    """Model Garden's backbone one-of plus `evonorm_resnet` and `evonorm_efficientnet`."""

    evonorm_resnet: NormActResNet = dataclasses.field(default_factory=NormActResNet)
    evonorm_efficientnet: NormActEfficientNet = dataclasses.field(default_factory=NormActEfficientNet)
    nf_resnet: NFResNet = dataclasses.field(default_factory=NFResNet)


def check_backbone(backbone):
    """Raises ValueError for an unknown norm-act name or model id in the active sub-config."""
    if backbone.type not in ("evonorm_resnet", "evonorm_efficientnet"):
        return
    from evonorm_tf.modeling.backbones import EFFICIENTNET_SCALING, RESNET_SPECS

    config = backbone.get()
    prefix = f"task.model.backbone.{backbone.type}"
    name = config.norm_activation.type
    if not isinstance(name, str) or name.strip().lower() not in NORM_ACT_NAMES:
        raise ValueError(
            f"{prefix}.norm_activation.type={name!r} is not a norm-act; valid names: "
            f"{', '.join(NORM_ACT_NAMES)}"
        )
    valid_ids = RESNET_SPECS if backbone.type == "evonorm_resnet" else EFFICIENTNET_SCALING
    if config.model_id not in valid_ids:
        raise ValueError(
            f"{prefix}.model_id={config.model_id!r} is not one of {sorted(valid_ids)}"
        )
