"""One worker of the MultiWorkerMirroredStrategy drill (run by tests/project/test_training_drills.py).

    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:P0", "127.0.0.1:P1"]}, "task": {"type": "worker", "index": i}}' \
        python tests/multi_worker_task.py OUTPUT.npz

Each worker holds its half of a fixed global batch. It runs a synchronized
EvoNorm-B0 (tf_keras) in training mode on its half, then trains a small
tf_keras model with that layer for a few steps under the strategy, and writes
to OUTPUT.npz: its half's outputs, the layer's moving variance, and the
model's per-step losses.
"""

import os
import sys

import numpy as np
import tensorflow as tf
import tf_keras

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evonorm_tf import tf_keras as evonorm_tf_keras  # noqa: E402

SHAPE = (8, 4, 4, 8)  # global batch; 4 examples per worker
TRAIN_STEPS = 3


def global_batch(seed=0):
    """The fixed global batch; its halves have different statistics."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, SHAPE) * rng.uniform(0.5, 2.0, SHAPE[-1])
    x[SHAPE[0] // 2:] = 3.0 * x[SHAPE[0] // 2:] + 1.0
    return x.astype("float32")


def layer_weights(layer):
    rng = np.random.default_rng(1)
    return [rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()]


def make_layer():
    layer = evonorm_tf_keras.get_norm_act("evonorm_b0", synchronized=True, momentum=0.5)
    layer.build(SHAPE)
    layer.set_weights(layer_weights(layer))
    return layer


def make_model():
    inputs = tf_keras.Input(SHAPE[1:])
    x = tf_keras.layers.Conv2D(8, 3, padding="same", use_bias=False,
                               kernel_initializer=tf_keras.initializers.GlorotUniform(seed=0))(inputs)
    x = evonorm_tf_keras.get_norm_act("evonorm_b0", synchronized=True)(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf_keras.layers.Dense(2, kernel_initializer=tf_keras.initializers.GlorotUniform(seed=1))(x)
    return tf_keras.Model(inputs, outputs)


def main(output):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = strategy.cluster_resolver.task_id
    x = global_batch()
    half = x[task * SHAPE[0] // 2:(task + 1) * SHAPE[0] // 2]
    labels = (np.arange(SHAPE[0]) % 2).astype("int32")
    half_labels = labels[task * SHAPE[0] // 2:(task + 1) * SHAPE[0] // 2]

    with strategy.scope():
        layer = make_layer()
        model = make_model()
        optimizer = tf_keras.optimizers.SGD(0.1)

    @tf.function
    def statistics_step(inputs):
        return strategy.run(lambda value: layer(value, training=True), args=(inputs,))

    outputs = strategy.experimental_local_results(statistics_step(tf.constant(half)))[0].numpy()

    @tf.function
    def train_step(images, targets):
        def replica_step(images, targets):
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                loss = tf.reduce_sum(tf_keras.losses.sparse_categorical_crossentropy(
                    targets, logits, from_logits=True)) / SHAPE[0]
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss

        per_replica = strategy.run(replica_step, args=(images, targets))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    losses = [float(train_step(tf.constant(half), tf.constant(half_labels))) for _ in range(TRAIN_STEPS)]
    np.savez(output, outputs=outputs, moving_variance=layer.moving_variance.numpy(), losses=np.array(losses),
             task=task)


if __name__ == "__main__":
    main(sys.argv[1])
