"""The norm-act Mask R-CNN heads: Model Garden's output shapes with three norm-acts,
the same outputs as Model Garden's heads for `bn_relu`, norm-act layers in every BN place."""

import numpy as np
import pytest
import tensorflow as tf
from official.vision.modeling.heads import dense_prediction_heads, instance_heads

from evonorm_tf.modeling.heads import (
    NormActDetectionHead,
    NormActMaskHead,
    NormActRPNHead,
    PerRoiNormAct,
)
from evonorm_tf.tf_keras import TF_KERAS_TABLE

NORM_ACTS = ("bn_relu", "evonorm_b0", "evonorm_s0")
OPTIONS = {"groups": 8}
FILTERS = 16
NUM_CLASSES = 4
ROIS = 3
RPN_ARGS = dict(min_level=3, max_level=5, num_anchors_per_location=3, num_convs=2, num_filters=FILTERS)
DETECTION_ARGS = dict(num_classes=NUM_CLASSES, num_convs=2, num_filters=FILTERS, num_fcs=2, fc_dims=32)
MASK_ARGS = dict(num_classes=NUM_CLASSES, upsample_factor=2, num_convs=2, num_filters=FILTERS)
# Model Garden's BN options equal to those of our `bn_relu`, for the equality tests.
BN_OPTIONS = {"momentum": 0.99, "epsilon": 1e-3}


def _rpn_inputs():
    return {
        str(level): tf.random.stateless_normal([2, 128 // 2**level, 128 // 2**level, FILTERS], seed=(level, 1))
        for level in range(3, 6)
    }


def _roi_features(size):
    return tf.random.stateless_normal([2, ROIS, size, size, FILTERS], seed=(5, 6))


def _roi_classes():
    return tf.constant([[1, 2, 3], [0, 3, 1]], tf.int32)


def _run(head, kind, training):
    if kind == "rpn":
        return head(_rpn_inputs(), training=training)
    if kind == "detection":
        return head(_roi_features(7), training=training)
    return head([_roi_features(7), _roi_classes()], training=training)


HEADS = {
    "rpn": (NormActRPNHead, dense_prediction_heads.RPNHead, RPN_ARGS),
    "detection": (NormActDetectionHead, instance_heads.DetectionHead, DETECTION_ARGS),
    "mask": (NormActMaskHead, instance_heads.MaskHead, MASK_ARGS),
}


def _shapes(outputs):
    return tf.nest.map_structure(lambda t: t.shape.as_list(), outputs)


@pytest.mark.parametrize("kind", sorted(HEADS))
@pytest.mark.parametrize("norm_act", NORM_ACTS)
def test_output_shapes_match_model_garden_and_gradients_finite(kind, norm_act):
    ours_class, theirs_class, args = HEADS[kind]
    ours = ours_class(norm_act=norm_act, norm_act_options=OPTIONS, **args)
    theirs = theirs_class(**args)
    with tf.GradientTape() as tape:
        outputs = _run(ours, kind, training=True)
        loss = tf.add_n([tf.reduce_mean(tf.square(t)) for t in tf.nest.flatten(outputs)])
    assert _shapes(outputs) == _shapes(_run(theirs, kind, training=True))
    gradients = tape.gradient(loss, ours.trainable_variables)
    assert all(np.isfinite(t.numpy()).all() for t in tf.nest.flatten(outputs))
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in gradients)
    # Every BN of Model Garden's head became one of our norm-act layers, and no BN is left.
    norm_acts = [m for m in ours.submodules if isinstance(m, TF_KERAS_TABLE[norm_act])]
    expected_count = {"rpn": 3 * 2, "detection": 2 + 2, "mask": 2 + 1}[kind]
    assert len(norm_acts) == expected_count
    assert all(m.nonlinearity for m in norm_acts)
    # No second activation after the norm-act: Model Garden's separate activation is the identity.
    np.testing.assert_array_equal(ours._activation(tf.constant([-2.0, 3.0])).numpy(), [-2.0, 3.0])
    their_bns = [w for w in theirs.weights if "moving_mean" in w.name]
    assert len(their_bns) == expected_count
    if norm_act != "bn_relu":
        assert not any("moving_mean" in w.name for w in ours.weights)


def _copy_weights_by_layer_name(source, target):
    """Copies every weighted sublayer of `source` into the `target` sublayer of that name."""
    targets = {m.name: m for m in target.submodules if getattr(m, "weights", None)}
    rng = np.random.default_rng(0)
    copied = 0
    for module in source.submodules:
        if not module.weights or module.name not in targets:
            continue
        # Random weights (positive for the norms' γ, β and moving statistics) make the
        # comparison meaningful: the RPN's output convolutions start near zero.
        if "bn" in module.name or "norm" in module.name:
            module.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in module.get_weights()])
        else:
            module.set_weights([rng.normal(0.0, 0.3, w.shape) for w in module.get_weights()])
        targets[module.name].set_weights(module.get_weights())
        copied += 1
    return copied


@pytest.mark.parametrize("kind", sorted(HEADS))
@pytest.mark.parametrize("training", (False, True))
def test_bn_relu_computes_model_gardens_head(kind, training):
    ours_class, theirs_class, args = HEADS[kind]
    ours = ours_class(norm_act="bn_relu", norm_act_options=BN_OPTIONS, **args)
    theirs = theirs_class(**args)
    _run(ours, kind, training=False), _run(theirs, kind, training=False)  # build both
    copied = _copy_weights_by_layer_name(theirs, ours)
    assert copied == len([m for m in theirs.submodules if getattr(m, "weights", None)])
    expected = _run(theirs, kind, training=training)
    actual = _run(ours, kind, training=training)
    for got, want in zip(tf.nest.flatten(actual), tf.nest.flatten(expected)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-4, atol=2e-4)


def test_per_roi_norm_act_treats_each_roi_as_a_sample():
    """EvoNorm-S0 at a dense position: each RoI normalised over its own channel groups."""
    layer = PerRoiNormAct(TF_KERAS_TABLE["evonorm_s0"](groups=2, epsilon=1e-5))
    x = np.random.default_rng(1).normal(size=(2, 3, 8)).astype(np.float32)
    y = layer(tf.constant(x), training=True).numpy()
    grouped = x.astype(np.float64).reshape(2, 3, 2, 4)
    std = np.sqrt(grouped.var(axis=-1, keepdims=True) + 1e-5)
    expected = (grouped * (1 / (1 + np.exp(-grouped))) / std).reshape(2, 3, 8)  # v = γ = 1, β = 0
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_config_round_trip_and_activation_rejected():
    head = NormActMaskHead(norm_act="evonorm_s0", norm_act_options={"groups": 4}, **MASK_ARGS)
    config = head.get_config()
    assert config["norm_act"] == "evonorm_s0" and config["norm_act_options"]["groups"] == 4
    rebuilt = NormActMaskHead.from_config(config)
    rebuilt([_roi_features(7), _roi_classes()])
    (deconv_norm,) = [m for m in rebuilt.submodules if m.name == "mask-deconv-bn"]
    assert isinstance(deconv_norm, TF_KERAS_TABLE["evonorm_s0"]) and deconv_norm.groups == 4
    with pytest.raises(ValueError, match="activation='swish'"):
        NormActDetectionHead(activation="swish", **DETECTION_ARGS)


def test_experiment_trains_one_step_on_shapes_coco(tmp_path):
    """`evonorm_maskrcnn_resnetfpn_coco`, shrunk: EvoNorm-S0 in backbone, FPN and heads;
    one SGD step on the generated shapes TFRecords updates the heads' norm-act weights."""
    import tf_keras
    from official.core import exp_factory, task_factory

    from evonorm_tf.configs import maskrcnn as maskrcnn_configs
    from evonorm_tf.data import shapes_coco

    files = shapes_coco.write_shapes_coco(str(tmp_path), num_images=2, image_size=(64, 64), seed=0)
    s0 = {"type": "evonorm_s0", "groups": 8}
    config = exp_factory.get_exp_config("evonorm_maskrcnn_resnetfpn_coco")
    config.override({"runtime": {"mixed_precision_dtype": "float32"}, "task": {
        "model": {
            "num_classes": shapes_coco.NUM_CLASSES, "input_size": [64, 64, 3], "min_level": 3, "max_level": 6,
            "backbone": {"evonorm_resnet": {"model_id": 10, "width_multiplier": 0.125, "norm_activation": s0}},
            "decoder": {"evonorm_fpn": {"num_filters": 16, "norm_activation": s0}},
            "heads_norm_activation": s0,
            "rpn_head": {"num_filters": 16},
            "detection_head": {"num_convs": 1, "num_filters": 16, "fc_dims": 32},
            "mask_head": {"num_convs": 1, "num_filters": 16},
            "roi_generator": {"pre_nms_top_k": 64, "num_proposals": 16,
                              "test_pre_nms_top_k": 64, "test_num_proposals": 16},
            "roi_sampler": {"num_sampled_rois": 8},
            "mask_sampler": {"num_sampled_masks": 4},
            "detection_generator": {"pre_nms_top_k": 64, "max_num_detections": 8},
        },
        "train_data": {
            "input_path": files.tfrecord_pattern, "global_batch_size": 2, "dtype": "float32",
            "shuffle_buffer_size": 2,
            "parser": {"aug_scale_min": 1.0, "aug_scale_max": 1.0, "mask_crop_size": 28, "max_num_instances": 8},
        },
    }})
    config.validate()
    task = task_factory.get_task(config.task)
    assert isinstance(task, maskrcnn_configs.NormActMaskRCNNTask)
    model = task.build_model()
    assert isinstance(model.rpn_head, NormActRPNHead)
    detection_head = model.detection_head[0] if isinstance(model.detection_head, list) else model.detection_head
    assert isinstance(detection_head, NormActDetectionHead)
    assert isinstance(model.mask_head, NormActMaskHead)
    # Every head norm-act weight (γ, β, v of EvoNorm-S0) is a trainable weight of the model:
    # RPN 4 levels x 1 conv, detection 1 conv + 1 dense, mask 1 conv + 1 deconv.
    model_weights = {w.ref() for w in model.trainable_weights}
    norm_acts = {
        name: [m for m in getattr(model, name).submodules if isinstance(m, TF_KERAS_TABLE["evonorm_s0"])]
        for name in ("rpn_head", "mask_head")
    }
    norm_acts["detection_head"] = [
        m for m in detection_head.submodules if isinstance(m, TF_KERAS_TABLE["evonorm_s0"])
    ]
    assert {name: len(layers) for name, layers in norm_acts.items()} == {
        "rpn_head": 4, "detection_head": 2, "mask_head": 2
    }
    for layers in norm_acts.values():
        for layer in layers:
            assert len(layer.trainable_weights) == 3
            assert all(w.ref() in model_weights for w in layer.trainable_weights)
    # Weights with gradients large enough to move in one step (the RPN's output layer starts
    # at std 1e-5, so its coarse levels barely move).
    head_norm_weights = [
        layer.gamma for name, index in (("rpn_head", 0), ("detection_head", 1), ("mask_head", 1))
        for layer in [norm_acts[name][index]]
    ]
    before = [w.numpy().copy() for w in head_norm_weights]
    batch = next(iter(task.build_inputs(config.task.train_data)))
    optimizer = tf_keras.optimizers.SGD(0.01)
    logs = task.train_step(batch, model, optimizer, metrics=task.build_metrics(training=True))
    assert np.isfinite(float(logs["loss"]))
    for weight, initial in zip(head_norm_weights, before):
        assert not np.array_equal(weight.numpy(), initial), weight.name


# -- the BN-ReLU Mask R-CNN is Model Garden's ------------------------------------------------

# Model-level norm options unlike every default, so each one visibly reaches (or not) each layer.
MODEL_NORM = {"use_sync_bn": True, "norm_momentum": 0.7, "norm_epsilon": 2e-3}
MODEL_SIZE = 64
_TINY_MODEL = {
    "num_classes": NUM_CLASSES, "input_size": [MODEL_SIZE, MODEL_SIZE, 3], "min_level": 3, "max_level": 5,
    "norm_activation": MODEL_NORM,
    "rpn_head": {"num_convs": 1, "num_filters": 8},
    "detection_head": {"num_convs": 1, "num_filters": 8, "num_fcs": 1, "fc_dims": 16},
    "mask_head": {"num_convs": 1, "num_filters": 8},
    "roi_generator": {"test_pre_nms_top_k": 64, "test_num_proposals": 16},
    # No score threshold: random weights give low scores, and every detection is compared.
    "detection_generator": {"pre_nms_top_k": 64, "max_num_detections": 8, "pre_nms_score_threshold": 0.0},
}


def _detection_head(model):
    head = model.detection_head
    return head[0] if isinstance(head, (list, tuple)) else head


def _norm_parts(model):
    return {"decoder": model.decoder, "rpn_head": model.rpn_head,
            "detection_head": _detection_head(model), "mask_head": model.mask_head}


def _bn_options(layer):
    layer = getattr(layer, "norm_act", layer)  # PerRoiNormAct holds the norm-act
    return bool(layer.synchronized), layer.momentum, layer.epsilon


def _build_pair(ours_backbone, theirs_backbone):
    """Model Garden's Mask R-CNN (`build_maskrcnn`, FPN, heads) and ours with `bn_relu` in the
    FPN and heads, from the same model-level `norm_activation` and head sizes."""
    import tf_keras
    from official.vision.configs import maskrcnn as model_garden_configs
    from official.vision.modeling import factory as model_garden_factory

    from evonorm_tf.configs import maskrcnn as maskrcnn_configs
    from evonorm_tf.modeling.heads import maskrcnn as maskrcnn_builder

    theirs_config = model_garden_configs.MaskRCNN()
    theirs_config.override(dict(_TINY_MODEL, backbone=theirs_backbone,
                                decoder={"type": "fpn", "fpn": {"num_filters": 8}}))
    ours_config = maskrcnn_configs.MaskRCNN()
    ours_config.override(dict(
        _TINY_MODEL, backbone=ours_backbone,
        decoder={"type": "evonorm_fpn", "evonorm_fpn": {"num_filters": 8, "norm_activation": {"type": "bn_relu"}}},
        heads_norm_activation={"type": "bn_relu"},
    ))
    spec = tf_keras.layers.InputSpec(shape=[None, MODEL_SIZE, MODEL_SIZE, 3])
    tf_keras.utils.set_random_seed(0)  # the same initial weights in every run
    theirs = model_garden_factory.build_maskrcnn(spec, theirs_config)
    ours = maskrcnn_builder.build_maskrcnn(spec, ours_config)
    images = tf.random.stateless_normal([1, MODEL_SIZE, MODEL_SIZE, 3], seed=(7, 8))
    image_shape = tf.constant([[MODEL_SIZE, MODEL_SIZE]])
    for model in (theirs, ours):
        model(images, image_shape=image_shape, training=False)  # builds every head
    return ours, theirs, images, image_shape


def _sorted_shapes(model):
    return sorted(w.shape.as_list() for w in model.weights)


def test_bn_relu_maskrcnn_is_model_gardens_model():
    """With Model Garden's ResNet backbone in both, our FPN and heads with `bn_relu` make
    Model Garden's Mask R-CNN: the same variables, the same BN options layer by layer (the
    mask head's BN per replica, as Model Garden's `build_maskrcnn` leaves it), and after
    copying the weights across, the same detections and masks for the same image."""
    import tf_keras

    # Model Garden's RPN head picks SyncBatchNormalization when `use_sync_bn` is set.
    bn_classes = (tf_keras.layers.BatchNormalization, tf_keras.layers.experimental.SyncBatchNormalization)
    resnet = {"type": "resnet", "resnet": {"model_id": 10, "depth_multiplier": 0.25}}
    ours, theirs, images, image_shape = _build_pair(resnet, resnet)
    assert len(ours.weights) == len(theirs.weights) == 137
    assert ours.count_params() == theirs.count_params()
    assert _sorted_shapes(ours) == _sorted_shapes(theirs)

    ours_parts, theirs_parts = _norm_parts(ours), _norm_parts(theirs)
    synchronized = {}
    for part, their_part in theirs_parts.items():
        their_norms = {m.name: m for m in their_part.submodules if isinstance(m, bn_classes)}
        our_norms = {m.name: m for m in ours_parts[part].submodules if m.name in their_norms}
        assert sorted(our_norms) == sorted(their_norms) and their_norms, part
        for name, their_norm in their_norms.items():
            assert _bn_options(our_norms[name]) == _bn_options(their_norm), (part, name)
        synchronized[part] = sum(_bn_options(m)[0] for m in our_norms.values()), len(our_norms)
    # FPN: one BN per level 3..5; RPN: 1 conv x 3 levels; detection: 1 conv + 1 fc; mask: 1 conv + deconv.
    assert synchronized == {"decoder": (3, 3), "rpn_head": (3, 3), "detection_head": (2, 2), "mask_head": (0, 2)}

    # The same weights in both: the backbones are the same class (copied in order), the FPN
    # and heads have Model Garden's layer names (copied by name).
    rng = np.random.default_rng(3)
    for theirs_weight, ours_weight in zip(theirs.backbone.weights, ours.backbone.weights):
        if "batch_normalization" in theirs_weight.name:  # random BN statistics and affine weights
            theirs_weight.assign(rng.uniform(0.5, 1.5, theirs_weight.shape))
        ours_weight.assign(theirs_weight)
    for part, their_part in theirs_parts.items():
        copied = _copy_weights_by_layer_name(their_part, ours_parts[part])
        assert copied == len([m for m in their_part.submodules if getattr(m, "weights", None)]), part
    expected = theirs(images, image_shape=image_shape, training=False)
    actual = ours(images, image_shape=image_shape, training=False)
    assert sorted(actual) == sorted(expected)
    assert int(expected["num_detections"][0]) > 0
    assert {"detection_boxes", "detection_masks", "decoder_features", "rpn_scores"} <= set(expected)
    for key in expected:
        for got, want in zip(tf.nest.flatten(actual[key]), tf.nest.flatten(expected[key])):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4, err_msg=key)


def test_bn_relu_maskrcnn_with_our_resnet_has_model_gardens_variables():
    """The BN-ReLU baseline's backbone (`evonorm_resnet`, v1.5) in place of Model Garden's ResNet:
    the same variables, and the model-level options reach all 13 of its BN layers."""
    ours, theirs, _, _ = _build_pair(
        {"type": "evonorm_resnet", "evonorm_resnet": {
            "model_id": 10, "width_multiplier": 0.25, "preactivation": False,
            "norm_activation": {"type": "bn_relu"}}},
        {"type": "resnet", "resnet": {"model_id": 10, "depth_multiplier": 0.25}},
    )
    assert ours.count_params() == theirs.count_params()
    assert _sorted_shapes(ours) == _sorted_shapes(theirs)
    import norm_act_model_checks as checks

    layers = checks.norm_act_layers(ours.backbone)
    assert len(layers) == 13  # stem + 4 basic blocks x 2 + 3 projection shortcuts
    assert {_bn_options(layer) for layer in layers} == {(True, 0.7, 2e-3)}
