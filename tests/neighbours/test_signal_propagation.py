"""Signal propagation analysis: the statistics it records and the plot it draws.

Expected behaviour at initialization (arXiv:2101.08692, §2 and §4): an
NF-ResNet's residual stream has variance 1 + j·α² after the j-th block of a
stage (reset at each stage's first block) and channel means near zero; an
unnormalized ReLU ResNet's squared channel means grow with depth; a BN
ResNet's statistics stay of order one.
"""

import numpy as np
import pytest
import tf_keras

from evonorm_tf.analysis import signal_propagation as spp
from evonorm_tf.modeling import build_nf_resnet, build_resnet

ALPHA = 0.2


def _stage_positions(stages=3, repeats=3):
    return [index for _ in range(stages) for index in range(repeats)]


def test_nf_resnet_variance_follows_analytic_growth_and_means_stay_near_zero():
    tf_keras.utils.set_random_seed(0)
    # 64×64 inputs keep zero padding from shrinking the variance at 16×16 maps.
    model = build_nf_resnet(20, input_shape=(64, 64, 3), alpha=ALPHA, skip_gain_init=1.0)
    result = spp.signal_propagation(model, batch_size=8, seed=0)
    assert len(result.block_names) == 9
    expected = np.array([1.0 + (position + 1) * ALPHA**2 for position in _stage_positions()])
    # Border zero padding and an 8-image batch move single values by up to ~15%.
    np.testing.assert_allclose(result.variance, expected, rtol=0.2)
    # The growth per non-transition block averages α² (0.8–1.0 α² over seeds 0–4).
    increments = np.diff(result.variance.reshape(3, 3), axis=1)
    assert 0.6 * ALPHA**2 < increments.mean() < 1.4 * ALPHA**2, increments
    # A drop (the reset) at each transition.
    assert result.variance[3] < result.variance[2] and result.variance[6] < result.variance[5]
    assert np.all(result.squared_mean < 0.05)
    assert np.all((result.residual_variance > 0.7) & (result.residual_variance < 1.3))


def test_unnormalized_relu_resnet_shows_mean_shift_growth():
    tf_keras.utils.set_random_seed(0)
    model = build_resnet(20, spp.UnnormalizedFactory(), input_shape=(16, 16, 3),
                         preactivation=True, kernel_initializer="he_normal")
    result = spp.signal_propagation(model, batch_size=8, seed=0)
    assert result.squared_mean[-1] > 30.0 * result.squared_mean[0]
    assert np.all(np.diff(result.squared_mean[::3]) > 0)  # growth from stage to stage
    assert result.squared_mean[-1] > 100.0


@pytest.mark.parametrize("preactivation", [True, False])
def test_batch_norm_resnet_statistics_stay_of_order_one(preactivation):
    tf_keras.utils.set_random_seed(0)
    model = build_resnet(20, "bn_relu", input_shape=(16, 16, 3), preactivation=preactivation,
                         zero_init_residual=False)
    result = spp.signal_propagation(model, batch_size=8, seed=0, training=True)
    assert len(result.block_names) == 9
    assert np.all((result.variance > 0.2) & (result.variance < 5.0))
    assert np.all(result.squared_mean < 3.0)
    assert np.all((result.residual_variance > 0.1) & (result.residual_variance < 2.0))
    if not preactivation:
        # v1.5: the branch ends with BN (γ = 1): batch variance 1 per channel.
        np.testing.assert_allclose(result.residual_variance, 1.0, atol=1e-3)


def test_finds_the_backbone_inside_a_classifier():
    model = build_nf_resnet(20, input_shape=(16, 16, 1), num_classes=10, width_multiplier=0.5)
    backbone, blocks = spp.residual_blocks(model)
    assert backbone is not model and len(blocks) == 9
    assert blocks[0].name == "stage1_block1" and blocks[-1].name == "stage3_block3"
    with pytest.raises(ValueError, match="no residual merge"):
        spp.residual_blocks(tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="received 'vgg16'"):
        spp.build_backbone("vgg16")


def test_command_writes_a_png(tmp_path):
    path = tmp_path / "spp.png"
    spp.main(["--backbone", "nf_resnet20", "--backbone", "resnet20:none",
              "--output", str(path), "--image-size", "16", "--batch-size", "4"])
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_every_panel_has_a_labelled_y_axis_and_the_command_prints_the_ranges(tmp_path, monkeypatch, capsys):
    import matplotlib.figure

    labels = []
    save = matplotlib.figure.Figure.savefig

    def recording_savefig(figure, *args, **kwargs):
        labels.extend((axis.get_xlabel(), axis.get_ylabel()) for axis in figure.axes)
        return save(figure, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording_savefig)
    spp.main(["--backbone", "nf_resnet20", "--output", str(tmp_path / "spp.png"), "--image-size", "16",
              "--batch-size", "4"])
    assert len(labels) == 3 and all(x and y for x, y in labels), labels
    printed = capsys.readouterr().out
    tf_keras.utils.set_random_seed(0)
    inputs = np.random.default_rng(0).standard_normal((4, 16, 16, 3)).astype(np.float32)
    result = spp.signal_propagation(spp.build_backbone("nf_resnet20", (16, 16, 3)), inputs, training=True)
    # The printed ranges are those of the recorded statistics.
    low, high = result.residual_variance.min(), result.residual_variance.max()
    assert f"residual variance {low:.3g}–{high:.3g}" in printed, printed
