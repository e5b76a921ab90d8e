"""The proxy task: data sets, the K anchor architectures and short training runs.

The paper (arXiv:2004.02967 §4) trains every candidate from scratch with K = 3
anchor architectures (ResNet-50 v2, MobileNetV2, EfficientNet-B0) on CIFAR-10.
Here the anchors are tiny versions of the same three families, written with
Keras 3 and a norm-act callable, so a CPU trains one in seconds:

| anchor | structure |
|---|---|
| `resnet` | pre-activation ResNet: stem conv, 2 basic blocks (one strided), final norm-act |
| `mobilenet` | MobileNetV2: inverted residuals (1×1 expand, 3×3 depthwise, 1×1 linear project) |
| `efficientnet` | EfficientNet: MBConv blocks as MobileNetV2 plus squeeze-excitation, SiLU in SE |

Data (`DATA`):
- `digits` (the search default): scikit-learn's bundled 8×8 digits, 1,400
  training and 397 held-out images. Calibrated in docs/search.md: BN-ReLU,
  EvoNorm-B0 and -S0 reach 0.33–0.80 after 50 steps on every anchor, so
  the paper's quality rule (twice chance, 0.2) separates them from layers
  that hide the input (a constant predictor scores 0.08–0.11).
- `textures`: an offline, procedurally generated 10-class task (shape × stripe
  orientation, random colours, positions, scales, a distractor shape and
  noise). Learnt slowly: BN-ReLU and the EvoNorms are still at 0.10–0.21
  after 100 steps, too close to chance for a short quality test.
- `cifar10`: TFDS `cifar10` from a local `data_dir` (no download).
"""

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from evonorm_tf import factory, registry
from evonorm_tf.search import layers as search_layers

NUM_CLASSES = 10
ANCHORS = ("resnet", "mobilenet", "efficientnet")
DATA = ("textures", "digits", "cifar10")


# -- data ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Dataset:
    """Images (float32, NHWC, roughly zero-mean unit-variance) and integer labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    name: str = ""


def _shape_masks(kind, xx, yy, cx, cy, radius):
    """Boolean masks `[N, S, S]` of one shape kind at per-image centres and radii."""
    dx, dy = xx - cx, yy - cy
    if kind == 0:    # disk
        return dx ** 2 + dy ** 2 <= radius ** 2
    if kind == 1:    # square
        return (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    if kind == 2:    # triangle (pointing up)
        return (dy <= radius * 0.8) & (dy >= 2.0 * np.abs(dx) - radius)
    if kind == 3:    # cross
        arm = radius * 0.35
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= radius)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= radius))
    ring = dx ** 2 + dy ** 2                # ring
    return (ring <= radius ** 2) & (ring >= (radius * 0.55) ** 2)


def texture_images(num_images, image_size=16, noise=0.1, seed=0):
    """The `textures` proxy data: 10 classes = 5 shapes × 2 stripe orientations.

    Each image has a striped foreground shape (the class), a plain distractor
    shape of another kind, random colours and contrast, and Gaussian noise of
    standard deviation `noise` (in units of the contrast).

    Returns:
      `(images [N, S, S, 3] float32, labels [N] int32)`.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, num_images)
    shape_kind, orientation = labels // 2, labels % 2
    grid = np.arange(image_size, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    xx, yy = xx[None], yy[None]

    def per_image(low, high):
        return rng.uniform(low, high, (num_images, 1, 1)).astype(np.float32)

    margin = image_size * 0.3
    cx, cy = per_image(margin, image_size - margin), per_image(margin, image_size - margin)
    radius = per_image(image_size * 0.22, image_size * 0.34)
    period = per_image(2.5, 4.0)
    phase = per_image(0, 2 * np.pi)
    coordinate = np.where(orientation[:, None, None] == 0, yy, xx)
    stripes = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * coordinate / period + phase))

    foreground = np.zeros((num_images, image_size, image_size), bool)
    distractor = np.zeros_like(foreground)
    distractor_kind = (shape_kind + rng.integers(1, 5, num_images)) % 5
    dcx, dcy = per_image(0, image_size), per_image(0, image_size)
    for kind in range(5):
        chosen = shape_kind == kind
        foreground[chosen] = _shape_masks(kind, xx, yy, cx[chosen], cy[chosen], radius[chosen])
        chosen = distractor_kind == kind
        distractor[chosen] = _shape_masks(kind, xx, yy, dcx[chosen], dcy[chosen], radius[chosen] * 0.8)

    background = rng.uniform(-1, 1, (num_images, 1, 1, 3)).astype(np.float32)
    colour = rng.uniform(-1, 1, (num_images, 1, 1, 3)).astype(np.float32)
    other = rng.uniform(-1, 1, (num_images, 1, 1, 3)).astype(np.float32)
    contrast = per_image(0.5, 1.5)[..., None]
    images = np.broadcast_to(background, (num_images, image_size, image_size, 3)).copy()
    images = np.where(distractor[..., None], other, images)
    images = np.where(foreground[..., None], colour * stripes[..., None], images)
    images = images * contrast + rng.normal(0, noise, images.shape) * contrast
    images = (images - images.mean()) / images.std()
    return images.astype(np.float32), labels.astype(np.int32)


def textures(num_train=4096, num_test=1024, image_size=16, noise=0.1, seed=0):
    """The offline proxy data set (train and held-out test drawn independently)."""
    train = texture_images(num_train, image_size, noise, seed)
    test = texture_images(num_test, image_size, noise, seed + 1_000_003)
    return Dataset(*train, *test, name="textures")


def digits(num_test=397, seed=0):
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, offline).

    One channel, standardised with the training split's mean and standard
    deviation; a seeded shuffle holds out `num_test` images.
    """
    from sklearn import datasets

    bunch = datasets.load_digits()
    images = bunch.images.astype(np.float32)[..., None]
    labels = bunch.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(images))
    if not 0 < num_test < len(images):
        raise ValueError(f"num_test must be in 1..{len(images) - 1}, received {num_test!r}")
    test, train = order[:num_test], order[num_test:]
    mean, std = images[train].mean(), images[train].std()
    images = (images - mean) / std
    return Dataset(images[train], labels[train], images[test], labels[test], name="digits")


def cifar10(data_dir, num_train=None, num_validation=10_000):
    """TFDS `cifar10` from `data_dir`, never downloaded.

    As in the paper, fitness is measured on a held-out part of the *training*
    split (the last `num_validation` images), never on the test split.
    """
    import tensorflow_datasets as tfds

    dataset = tfds.load("cifar10", split="train", data_dir=data_dir, download=False,
                        as_supervised=True)
    batches = list(tfds.as_numpy(dataset.batch(10_000)))
    images = np.concatenate([batch[0] for batch in batches]).astype(np.float32) / 255.0
    labels = np.concatenate([batch[1] for batch in batches])
    mean, std = images.mean(axis=(0, 1, 2)), images.std(axis=(0, 1, 2))
    images = (images - mean) / std
    labels = labels.astype(np.int32)
    split = len(images) - num_validation
    if split <= 0:
        raise ValueError(f"num_validation={num_validation} leaves no training images of {len(images)}")
    end = split if num_train is None else min(split, num_train)
    return Dataset(images[:end], labels[:end], images[split:], labels[split:], name="cifar10")


def load_data(name, data_dir=None, seed=0, num_train=None, num_test=None, image_size=16, noise=0.1):
    """A proxy `Dataset` by name (see `DATA`); `num_test=None` takes each data set's default.

    `num_train` caps the training images (textures: the number generated,
    default 4096); `image_size` and `noise` only apply to `textures`.
    """
    if name == "textures":
        return textures(num_train or 4096, num_test or 1024, image_size, noise, seed)
    if name == "digits":
        data = digits(num_test or 397, seed)
        if num_train is not None:
            data.train_images, data.train_labels = data.train_images[:num_train], data.train_labels[:num_train]
        return data
    if name == "cifar10":
        if data_dir is None:
            raise ValueError("data='cifar10' needs data_dir (TFDS data is never downloaded here)")
        return cifar10(data_dir, num_train=num_train, **({} if num_test is None else {"num_validation": num_test}))
    raise ValueError(f"unknown proxy data {name!r}; valid: {', '.join(DATA)}")


# -- norm-act callables --------------------------------------------------------------------


def norm_act_builder(name, group_size=4):
    """A callable `(nonlinearity=True) -> Keras 3 layer` for a factory name or `graph:...`.

    Grouped statistics use `group_size` channels per group so every anchor
    width works.
    """
    if name.strip().lower().startswith(search_layers.GRAPH_PREFIX):
        accepted = {"nonlinearity", "group_size", "groups"}
    else:
        accepted = registry.accepted_arguments(name, "keras")

    def build(nonlinearity=True):
        kwargs = {"nonlinearity": nonlinearity}
        if "group_size" in accepted:
            kwargs.update(groups=None, group_size=group_size)
        return factory.get_norm_act(name, **kwargs)

    return build


# -- anchors -------------------------------------------------------------------------------


def _conv(filters, kernel, strides=1):
    return keras.layers.Conv2D(filters, kernel, strides, padding="same", use_bias=False)


def resnet(norm_act, input_shape, width=16):
    """A tiny pre-activation (v2) ResNet: norm-act before each conv, none in the stem."""
    inputs = keras.Input(input_shape)
    x = _conv(width, 3)(inputs)
    for filters, strides in ((width, 1), (2 * width, 2)):
        pre = norm_act()(x)
        shortcut = x if strides == 1 and filters == x.shape[-1] else _conv(filters, 1, strides)(pre)
        y = _conv(filters, 3, strides)(pre)
        y = norm_act()(y)
        y = _conv(filters, 3)(y)
        x = keras.layers.Add()([shortcut, y])
    x = norm_act()(x)
    return _head(inputs, x)


def _inverted_residual(x, norm_act, filters, strides, expansion, squeeze_excite):
    channels = x.shape[-1]
    y = norm_act()(_conv(channels * expansion, 1)(x))
    y = keras.layers.DepthwiseConv2D(3, strides, padding="same", use_bias=False)(y)
    y = norm_act()(y)
    if squeeze_excite:
        scale = keras.layers.GlobalAveragePooling2D(keepdims=True)(y)
        scale = keras.layers.Conv2D(max(4, channels // 4), 1, activation="silu")(scale)
        scale = keras.layers.Conv2D(y.shape[-1], 1, activation="sigmoid")(scale)
        y = keras.layers.Multiply()([y, scale])
    y = norm_act(nonlinearity=False)(_conv(filters, 1)(y))
    if strides == 1 and filters == channels:
        y = keras.layers.Add()([x, y])
    return y


def mobilenet(norm_act, input_shape, width=16):
    """A tiny MobileNetV2: inverted residuals with a linear (affine-only) projection."""
    inputs = keras.Input(input_shape)
    x = norm_act()(_conv(width, 3)(inputs))
    x = _inverted_residual(x, norm_act, width, 1, 3, squeeze_excite=False)
    x = _inverted_residual(x, norm_act, width + width // 2, 2, 3, squeeze_excite=False)
    x = norm_act()(_conv(4 * width, 1)(x))
    return _head(inputs, x)


def efficientnet(norm_act, input_shape, width=16):
    """A tiny EfficientNet: MBConv blocks with squeeze-excitation."""
    inputs = keras.Input(input_shape)
    x = norm_act()(_conv(width, 3)(inputs))
    x = _inverted_residual(x, norm_act, width, 1, 3, squeeze_excite=True)
    x = _inverted_residual(x, norm_act, width + width // 2, 2, 3, squeeze_excite=True)
    x = norm_act()(_conv(4 * width, 1)(x))
    return _head(inputs, x)


def _head(inputs, x):
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(x))


ANCHOR_BUILDERS = {"resnet": resnet, "mobilenet": mobilenet, "efficientnet": efficientnet}


def build_anchor(anchor, norm_act, input_shape, width=16, seed=0):
    if anchor not in ANCHOR_BUILDERS:
        raise ValueError(f"unknown anchor {anchor!r}; valid: {', '.join(ANCHOR_BUILDERS)}")
    keras.utils.set_random_seed(seed)
    return ANCHOR_BUILDERS[anchor](norm_act, input_shape, width)


# -- training ------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainConfig:
    """A short proxy training run with a cosine schedule (Adam, or SGD with momentum 0.9)."""

    steps: int = 300
    optimizer: str = "adam"
    batch_size: int = 64
    learning_rate: float = 0.003
    weight_decay: float = 5e-4
    eval_images: int = 1024


class Trainer:
    """Trains one anchor model step by step, so a quality check can stop it early."""

    def __init__(self, model, data, config, seed=0):
        self.model, self.data, self.config = model, data, config
        self.rng = np.random.default_rng(seed)
        schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, config.steps)
        if config.optimizer == "adam":
            self.optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
        elif config.optimizer == "sgd":
            self.optimizer = keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=config.weight_decay)
        else:
            raise ValueError(f"optimizer must be 'adam' or 'sgd', received {config.optimizer!r}")
        self.steps_done = 0
        self.last_loss = float("nan")
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        variables = model.trainable_variables
        # Creating the optimizer's slots before tracing: created inside the first call, they make
        # `tf.function` trace the step twice, which was half of a candidate's cost (docs/search.md).
        self.optimizer.build(variables)

        @tf.function
        def train_step(images, labels):
            with tf.GradientTape() as tape:
                loss = loss_fn(labels, model(images, training=True))
            gradients = tape.gradient(loss, variables)
            # A candidate layer may disconnect weights (e.g. a constant output).
            gradients = [tf.zeros_like(v) if g is None else g for g, v in zip(gradients, variables)]
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients])
            self.optimizer.apply_gradients(zip(gradients, variables))
            return loss, finite

        def predict(images):
            # Eager: one call on a few hundred images costs less than tracing a function for it.
            return tf.argmax(model(images, training=False), axis=-1, output_type=tf.int32)

        self._train_step, self._predict = train_step, predict

    def train(self, steps):
        """Runs `steps` more steps; returns False as soon as the loss or a gradient is not finite."""
        images, labels = self.data.train_images, self.data.train_labels
        for _ in range(steps):
            batch = self.rng.integers(0, len(images), self.config.batch_size)
            loss, finite = self._train_step(images[batch], labels[batch])
            self.steps_done += 1
            self.last_loss = float(loss)
            if not (bool(finite) and math.isfinite(self.last_loss)):
                return False
        return True

    def accuracy(self):
        """Held-out accuracy in inference mode (moving statistics)."""
        images = self.data.test_images[: self.config.eval_images]
        labels = self.data.test_labels[: self.config.eval_images]
        correct = 0
        for start in range(0, len(images), 1024):
            predicted = self._predict(images[start:start + 1024]).numpy()
            correct += int(np.sum(predicted == labels[start:start + 1024]))
        return correct / len(images)


def train_anchor(name, anchor, data, config, width=16, seed=0):
    """Trains `anchor` with norm-act `name` for `config.steps`; returns held-out accuracy (0 if it diverged)."""
    model = build_anchor(anchor, norm_act_builder(name), data.train_images.shape[1:], width, seed)
    trainer = Trainer(model, data, config, seed)
    if not trainer.train(config.steps):
        return 0.0
    return trainer.accuracy()
