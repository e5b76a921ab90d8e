"""Model Garden's `freeze_backbone` freezes a B-series backbone: moving statistics used and kept."""

import numpy as np
import pytest
import tensorflow as tf
from official.core import exp_factory, task_factory

import evonorm_tf.configs  # noqa: F401  (registers the experiments)
from evonorm_tf import registry


@pytest.mark.parametrize("norm_act", ["evonorm_b0", "evonorm_b1", "evonorm_b2", "bn_relu"])
def test_freeze_backbone_runs_b_series_in_inference_mode(norm_act):
    config = exp_factory.get_exp_config("evonorm_resnet_imagenet")
    config.override({"task": {
        "freeze_backbone": True,
        "model": {"input_size": [32, 32, 3], "num_classes": 4,
                  "backbone": {"evonorm_resnet": {"model_id": 20, "norm_activation": {"type": norm_act}}}},
    }}, is_strict=False)
    task = task_factory.get_task(config.task)
    model = task.build_model()
    assert model.backbone.trainable is False
    klass = registry.layer_class(norm_act, "tf_keras")
    layers = [m for m in model.backbone.submodules if isinstance(m, klass)]
    assert len(layers) > 10
    moving = [w for layer in layers for w in layer.weights if "moving" in w.name]
    for w in moving:  # statistics a training step would move away from
        w.assign(np.full(w.shape, 2.0, np.float32))
    before = [w.numpy().copy() for w in moving]
    x = tf.constant(np.random.default_rng(0).normal(3.0, 2.0, size=[4, 32, 32, 3]).astype(np.float32))
    features_training = model.backbone(x, training=True)
    features_inference = model.backbone(x, training=False)
    for level in features_inference:
        np.testing.assert_allclose(features_training[level].numpy(), features_inference[level].numpy(),
                                   rtol=1e-5, atol=1e-5)
    for w, value in zip(moving, before):
        np.testing.assert_array_equal(w.numpy(), value)
