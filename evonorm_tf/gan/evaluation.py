"""FID and Inception Score with a pluggable feature network.

    features, logits = extract(feature_network, images)      # batched
    fid = frechet_distance(*gaussian_statistics(real), *gaussian_statistics(fake))
    mean, std = inception_score(logits, splits=10)

A feature network is any callable `images → (features, logits)` with a
`name` attribute that names its metrics (`metric_names`: `fid_<name>`,
`inception_score_<name>`). Four are
provided: `inception_v3_network(weights_path)` (tf_keras's InceptionV3 with
user-supplied weights; its 2048-d average pool is FID's "pool_3" and its
logits give IS — no Inception weights ship with any installable package, see
docs/biggan.md; named `inception_v3_keras`),
`fid_inception.fid_inception_network(weights_path)` (the 2015 FID graph's
layout, `inception_2015`), `keras_model_network(model_or_path, feature_layer)` (any
tf_keras model) and `digits_feature_network()`, a small convnet trained
here on scikit-learn's digits (a monitoring metric for the digits demo,
not comparable with published FIDs).

FID (Heusel et al. 2017, arXiv:1706.08500):
`‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½)`, in float64 with SciPy's `sqrtm`.
IS (Salimans et al. 2016, arXiv:1606.03498): `exp(E_x KL(p(y|x) ‖ p(y)))`,
averaged over `splits` disjoint splits.
"""

import os
import warnings

import numpy as np
import scipy.linalg
import scipy.special
import tensorflow as tf
import tf_keras

__all__ = [
    "digits_feature_network",
    "metric_names",
    "extract",
    "frechet_distance",
    "gaussian_statistics",
    "inception_score",
    "inception_v3_network",
    "keras_model_network",
]


def metric_names(network):
    """`{"fid": "fid_<net>", "inception_score": ..., "inception_score_std": ...}` for a network.

    Scores are named by the network that computed them (its `name`
    attribute): an FID from the digits classifier (`fid_digits_classifier`)
    is not comparable with one from the 2015 Inception graph
    (`fid_inception_2015`) or from Keras's InceptionV3 (`fid_inception_v3_keras`).
    """
    name = getattr(network, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"feature network has no name attribute, received {network!r}")
    return {"fid": f"fid_{name}", "inception_score": f"inception_score_{name}",
            "inception_score_std": f"inception_score_std_{name}"}


def gaussian_statistics(features):
    """Mean and covariance (unbiased, float64) of `[N, D]` features."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be [N >= 2, D], received shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrtm(matrix):
    """SciPy's `sqrtm`, without its warning for singular input.

    The reference implementations call it with `disp=False` (deprecated in
    SciPy 1.16), which returns instead of warning; `frechet_distance` checks
    the result itself (finite, imaginary part within tolerance).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm(matrix)


def frechet_distance(mean1, covariance1, mean2, covariance2, imaginary_tolerance=1e-3):
    """Fréchet distance between two Gaussians, `‖μ₁−μ₂‖² + tr(Σ₁+Σ₂−2(Σ₁Σ₂)^½)`.

    The matrix square root is SciPy's `sqrtm`; when it is complex, its
    imaginary part must be round-off, as in the reference implementations
    (TTUR's `fid.py`, pytorch-fid): a diagonal imaginary component larger
    than `imaginary_tolerance` raises ValueError naming it, else the real part
    is kept. A singular product (non-finite root) is retried with 1e-6 added to
    both covariances' diagonals, as those implementations do.
    """
    mean1, mean2 = np.atleast_1d(mean1).astype(np.float64), np.atleast_1d(mean2).astype(np.float64)
    covariance1 = np.atleast_2d(covariance1).astype(np.float64)
    covariance2 = np.atleast_2d(covariance2).astype(np.float64)
    if mean1.shape != mean2.shape or covariance1.shape != covariance2.shape:
        raise ValueError(f"statistics disagree in shape: means {mean1.shape}, {mean2.shape}; "
                         f"covariances {covariance1.shape}, {covariance2.shape}")
    product_root = _sqrtm(covariance1 @ covariance2)
    if not np.isfinite(product_root).all():
        # Singular product: regularise both covariances slightly (as the TTUR code does).
        offset = np.eye(covariance1.shape[0]) * 1e-6
        product_root = _sqrtm((covariance1 + offset) @ (covariance2 + offset))
    if np.iscomplexobj(product_root):
        imaginary = np.abs(np.diagonal(product_root).imag).max()
        if imaginary > imaginary_tolerance:
            raise ValueError(
                f"sqrtm(Σ₁Σ₂) has an imaginary component of {imaginary:.3g} on its diagonal "
                f"(tolerance {imaginary_tolerance}): the covariances are not valid (too few "
                f"samples for the feature dimension, or non-finite features)")
        product_root = product_root.real
    difference = mean1 - mean2
    return float(difference @ difference + np.trace(covariance1) + np.trace(covariance2)
                 - 2.0 * np.trace(product_root))


def inception_score(logits, splits=10):
    """Mean and standard deviation over `splits` of `exp(mean KL(p(y|x) ‖ p(y)))`."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, classes], received shape {logits.shape}")
    if not isinstance(splits, int) or not 1 <= splits <= logits.shape[0]:
        raise ValueError(f"splits must be an int in [1, N={logits.shape[0]}], received {splits!r}")
    log_p = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
    scores = []
    for part in np.array_split(log_p, splits):
        log_marginal = np.log(np.exp(part).mean(axis=0))
        kl = (np.exp(part) * (part - log_marginal)).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def extract(feature_network, images, batch_size=64):
    """Runs `feature_network` over `images` in batches; returns NumPy (features, logits)."""
    features, logits = [], []
    for start in range(0, len(images), batch_size):
        f, l = feature_network(images[start:start + batch_size])
        features.append(np.asarray(f))
        logits.append(np.asarray(l))
    return np.concatenate(features), np.concatenate(logits)


def inception_v3_network(weights_path, classes=1008, input_size=299):
    """InceptionV3 from a local weights file, as a `images in [-1, 1] → (pool, logits)` callable.

    Args:
      weights_path: an `.h5` (or Keras weights) file for
        `tf_keras.applications.InceptionV3(include_top=True, classes=classes)`.
        Nothing is downloaded; a missing file raises FileNotFoundError.
      classes: classes of the top layer (1008 in the 2015 graph used for
        published FIDs, 1000 in Keras's ImageNet weights).
      input_size: images are resized bilinearly to this size. Default 299.
    """
    if weights_path is None or not os.path.isfile(str(weights_path)):
        raise FileNotFoundError(f"Inception weights file not found: {weights_path!r}")
    model = tf_keras.applications.InceptionV3(
        include_top=True, weights=None, classes=classes, classifier_activation=None,
        input_shape=(input_size, input_size, 3))
    model.load_weights(str(weights_path))
    pool = model.get_layer("avg_pool").output
    both = tf_keras.Model(model.input, [pool, model.output])

    def network(images):
        images = tf.image.resize(tf.cast(images, tf.float32), (input_size, input_size))
        return both(images, training=False)  # InceptionV3 expects [-1, 1] inputs

    network.model = both
    network.name = "inception_v3_keras"
    return network


def keras_model_network(model_or_path, feature_layer, name="keras_model"):
    """Any tf_keras model as an `images in [-1, 1] → (features, logits)` callable.

    Args:
      model_or_path: a `tf_keras.Model` or the path of one saved with
        `model.save` (`.keras` or `.h5`); loaded without compiling.
      feature_layer: name of the layer whose output is the FID feature
        (flattened to `[N, D]`); the model's output is the IS logits.

    Images are resized bilinearly to the model's input size and converted
    between grey and RGB to its input channels; they are passed in [-1, 1].
    `name` names the metrics it computes (`metric_names`). Default
    `"keras_model"`.
    """
    model = model_or_path
    if not isinstance(model, tf_keras.Model):
        if not os.path.exists(str(model_or_path)):
            raise FileNotFoundError(f"feature network model not found: {model_or_path!r}")
        model = tf_keras.models.load_model(str(model_or_path), compile=False)
    names = [layer.name for layer in model.layers]
    if feature_layer not in names:
        raise ValueError(f"feature_layer {feature_layer!r} is not a layer of {model.name!r}; "
                         f"layers: {', '.join(names)}")
    both = tf_keras.Model(model.inputs, [model.get_layer(feature_layer).output, model.output])
    height, width, channels = model.input_shape[1:4]

    def network(images):
        images = tf.cast(images, tf.float32)
        if images.shape[-1] != channels:
            images = (tf.reduce_mean(images, axis=-1, keepdims=True) if channels == 1
                      else tf.repeat(images[..., :1], channels, axis=-1))
        if height is not None and tuple(images.shape[1:3]) != (height, width):
            images = tf.image.resize(images, (height, width))
        features, logits = both(images, training=False)
        return tf.reshape(features, [tf.shape(features)[0], -1]), logits

    network.model = both
    network.name = name
    return network


def digits_feature_network(image_size=32, epochs=8, seed=0):
    """A small convnet trained on scikit-learn's digits; `images in [-1, 1] → (features, logits)`.

    The features are its 64-d penultimate activations. Trains in a few seconds
    on CPU; returns the callable with `.test_accuracy` set (held-out split).
    """
    from evonorm_tf.data import digits

    split = digits.load_digits_split(image_size=image_size, split_seed=seed)
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input((image_size, image_size, 1))
    h = inputs
    for filters in (16, 32, 64):
        h = tf_keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(h)
    features = tf_keras.layers.Dense(64, activation="relu")(tf_keras.layers.Flatten()(h))
    logits = tf_keras.layers.Dense(digits.NUM_CLASSES)(features)
    model = tf_keras.Model(inputs, [features, logits])
    classifier = tf_keras.Model(inputs, logits)
    classifier.compile(tf_keras.optimizers.Adam(3e-3),
                       tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    classifier.fit(split.train_images, split.train_labels, batch_size=64, epochs=epochs, verbose=0)
    _, accuracy = classifier.evaluate(split.test_images, split.test_labels, verbose=0)

    def network(images):
        images = tf.cast(images, tf.float32)
        grey = tf.reduce_mean(images, axis=-1, keepdims=True) if images.shape[-1] == 3 else images
        return model((grey + 1.0) / 2.0, training=False)  # [-1, 1] → the [0, 1] of training

    network.model = model
    network.name = "digits_classifier"
    network.test_accuracy = float(accuracy)
    return network
