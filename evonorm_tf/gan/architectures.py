"""BigGAN and BigGAN-deep variants as data tables.

Channel multipliers of the base width `ch` per resolution, from BigGAN-PyTorch's
`G_arch`/`D_arch` (Brock, Donahue, Simonyan 2019, arXiv:1809.11096, appendix B).
Each generator block doubles the resolution from 4x4; each discriminator
block halves it where `downsample` is True. `attention` lists the resolutions
after which a self-attention block runs (64x64 in the paper's 128 models).

BigGAN-deep (paper appendix B, table 7) uses bottleneck residual blocks,
two blocks per resolution (one resampling, one not) and the full z with the
class embedding as every block's condition (`deep_blocks.py`). Its generator
rows are BigGAN's; its discriminator rows (`DEEP_DISCRIMINATOR_SPECS`) start
with a 3x3 stem convolution and have one stage per later multiplier
(BigGAN-PyTorch's `BigGANdeep.py` `G_arch`/`D_arch`).
"""

import collections

GeneratorSpec = collections.namedtuple("GeneratorSpec", ["multipliers", "attention"])
DiscriminatorSpec = collections.namedtuple(
    "DiscriminatorSpec", ["multipliers", "downsample", "attention"])

# Output multipliers of each generator block; the 4x4 input has multipliers[0]
# on the first block's input side (BigGAN-PyTorch `in_channels[0]`).
GENERATOR_SPECS = {
    32: GeneratorSpec(multipliers=(4, 4, 4, 4), attention=()),  # input 4·ch, then 3 blocks
    64: GeneratorSpec(multipliers=(16, 16, 8, 4, 2), attention=(64,)),
    128: GeneratorSpec(multipliers=(16, 16, 8, 4, 2, 1), attention=(64,)),
}

DISCRIMINATOR_SPECS = {
    32: DiscriminatorSpec(multipliers=(4, 4, 4, 4), downsample=(True, True, False, False),
                          attention=()),
    64: DiscriminatorSpec(multipliers=(1, 2, 4, 8, 16), downsample=(True,) * 5, attention=(64,)),
    128: DiscriminatorSpec(multipliers=(1, 2, 4, 8, 16, 16),
                           downsample=(True,) * 5 + (False,), attention=(64,)),
}

# BigGAN-deep generator stages: stage i runs a bottleneck block at the input
# width (no resampling), then one that upsamples to multipliers[i + 1]; the
# rows equal BigGAN's (BigGAN-PyTorch `BigGANdeep.G_arch`).
DEEP_GENERATOR_SPECS = GENERATOR_SPECS

# BigGAN-deep discriminator: a 3x3 stem conv to multipliers[0]·ch, then stage i
# runs a bottleneck block to multipliers[i + 1]·ch (average-pooling where
# downsample[i]) and one more at that width (BigGAN-PyTorch `BigGANdeep.D_arch`;
# the paper's table 7 at 128). Attention follows a stage whose output is 64x64.
DEEP_DISCRIMINATOR_SPECS = {
    32: DiscriminatorSpec(multipliers=(4, 4, 4, 4), downsample=(True, True, False), attention=()),
    64: DiscriminatorSpec(multipliers=(1, 2, 4, 8, 16), downsample=(True,) * 4, attention=(64,)),
    128: DiscriminatorSpec(multipliers=(1, 2, 4, 8, 16, 16), downsample=(True,) * 5,
                           attention=(64,)),
}

# Two bottleneck blocks per resolution and the full z (no chunks) in every
# block's condition; D pools by summing, as BigGAN (both BigGAN-PyTorch and
# compare_gan sum, although compare_gan's docstring says mean).
VARIANTS = {
    "biggan": {"generator": GENERATOR_SPECS, "discriminator": DISCRIMINATOR_SPECS,
               "block": "residual", "blocks_per_resolution": 1, "hierarchical_z": True},
    "biggan_deep": {"generator": DEEP_GENERATOR_SPECS, "discriminator": DEEP_DISCRIMINATOR_SPECS,
                    "block": "bottleneck", "blocks_per_resolution": 2, "hierarchical_z": False},
}

# Paper widths and latent sizes (BigGAN-PyTorch launch scripts; compare_gan gin configs).
PAPER_SETTINGS = {
    "biggan_128": {"ch": 96, "z_dim": 120, "shared_dim": 128},
    "biggan_deep_128": {"ch": 128, "z_dim": 128, "shared_dim": 128},
}


def _variant(architecture):
    if architecture not in VARIANTS:
        raise ValueError(f"architecture must be one of {sorted(VARIANTS)}, received {architecture!r}")
    return VARIANTS[architecture]


def generator_spec(resolution, architecture="biggan"):
    specs = _variant(architecture)["generator"]
    if resolution not in specs:
        raise ValueError(f"resolution must be one of {sorted(specs)}, received {resolution!r}")
    return specs[resolution]


def discriminator_spec(resolution, architecture="biggan"):
    specs = _variant(architecture)["discriminator"]
    if resolution not in specs:
        raise ValueError(f"resolution must be one of {sorted(specs)}, received {resolution!r}")
    return specs[resolution]
