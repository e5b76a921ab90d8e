"""Model Garden config of the normalizer-free ResNet backbone (`backbone.type: nf_resnet`).

    task.model.backbone.type=nf_resnet
    task.model.backbone.nf_resnet.model_id=50

Reference: Brock, De, Smith. arXiv:2101.08692.
"""

import dataclasses

from official.modeling import hyperparams


@dataclasses.dataclass
class NFResNet(hyperparams.Config):
    """`evonorm_tf.modeling.NFResNet` (see its docstring).

    Attributes:
      model_id: 26, 50, 101 (ImageNet form) or 20, 32, 56 (CIFAR form).
      activation: `relu` or `silu`.
      alpha: residual scale α; 0.2 as arXiv:2101.08692.
      skip_gain_init: initial SkipInit gain; 0.0 (each block starts as the identity).
      stochastic_depth_drop_rate: largest stochastic-depth drop rate (block i of
        n drops with rate · i / n); 0.1 as the reference NF-ResNet.
      width_multiplier: scales all filters.
      scaled_final_activation: end with the γ-scaled activation (reference).
    """

    model_id: int = 50
    activation: str = "relu"
    alpha: float = 0.2
    skip_gain_init: float = 0.0
    stochastic_depth_drop_rate: float = 0.1
    width_multiplier: float = 1.0
    scaled_final_activation: bool = True
