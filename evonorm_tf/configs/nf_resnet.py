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
      width_multiplier: scales all filters.
    """

    model_id: int = 50
    activation: str = "relu"
    alpha: float = 0.2
    skip_gain_init: float = 0.0
    width_multiplier: float = 1.0
