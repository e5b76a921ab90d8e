"""Model Garden configs for the norm-act backbones; importing registers everything.

`import evonorm_tf.configs` registers the backbone builders (`evonorm_resnet`,
`evonorm_efficientnet`, `evonorm_spinenet`, `nf_resnet`), the `evonorm_fpn`
decoder, the task configs and the experiments of `EXPERIMENTS`:

- `evonorm_resnet_imagenet`, `evonorm_efficientnet_imagenet`: ImageNet
  classification with Model Garden's own classification task;
- `evonorm_maskrcnn_resnetfpn_coco`, `evonorm_maskrcnn_spinenet_coco`:
  COCO Mask R-CNN with norm-act FPN and heads (`evonorm_tf.configs.maskrcnn`);
- `evonorm_biggan_imagenet128`, `evonorm_biggan_digits`: BigGAN with a
  class-conditional norm-act generator (`evonorm_tf.configs.biggan`).

Override shape: `task.model.backbone.evonorm_resnet.norm_activation.type=evonorm_s0`
(see `evonorm_tf.configs.backbones`).
"""

from evonorm_tf import modeling  # noqa: F401  (registers the backbone builders)
from evonorm_tf.configs.backbones import (
    Backbone,
    NormActEfficientNet,
    NormActivation,
    NormActResNet,
    NormActSpineNet,
)
from evonorm_tf.configs.image_classification import (
    ExperimentConfig,
    ImageClassificationModel,
    ImageClassificationTask,
    evonorm_efficientnet_imagenet,
    evonorm_resnet_imagenet,
)

from evonorm_tf.configs import maskrcnn  # noqa: F401,E402  (registers the Mask R-CNN experiment)
from evonorm_tf.configs import biggan  # noqa: F401,E402  (BigGAN experiments)
from evonorm_tf.configs import biggan_task as _biggan_task  # noqa: F401,E402  (registers BigGANTask)

EXPERIMENTS = (
    "evonorm_resnet_imagenet",
    "evonorm_efficientnet_imagenet",
    "evonorm_maskrcnn_resnetfpn_coco",
    "evonorm_maskrcnn_spinenet_coco",
    "evonorm_biggan_imagenet128",
    "evonorm_biggan_digits",
)

__all__ = [
    "Backbone",
    "EXPERIMENTS",
    "ExperimentConfig",
    "ImageClassificationModel",
    "ImageClassificationTask",
    "NormActEfficientNet",
    "NormActResNet",
    "NormActSpineNet",
    "NormActivation",
    "evonorm_efficientnet_imagenet",
    "evonorm_resnet_imagenet",
]
