"""BigGAN and BigGAN-deep variants as data tables.

Channel multipliers of the base width `ch` per resolution, from BigGAN-PyTorch's
`G_arch`/`D_arch` (Brock, Donahue, Simonyan 2019, arXiv:1809.11096, appendix B).
Each generator block doubles the resolution from 4x4; each discriminator
block halves it where `downsample` is True. `attention` lists the resolutions
after which a self-attention block runs (64x64 in the paper's 128 models).

BigGAN-deep (paper appendix B, table 7) uses bottleneck residual blocks,
two blocks per resolution (the second without resampling) and the full z
with the class embedding as every block's condition; its rows are recorded
here as data (`DEEP_*`), the deep blocks are not implemented yet.
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

# BigGAN-deep (data only): the same multipliers, two bottleneck blocks per
# resolution, the full z (no chunks) in every block's condition, mean pooling in D.
VARIANTS = {
    "biggan": {"generator": GENERATOR_SPECS, "discriminator": DISCRIMINATOR_SPECS,
               "block": "residual", "blocks_per_resolution": 1, "hierarchical_z": True},
    "biggan_deep": {"generator": GENERATOR_SPECS, "discriminator": DISCRIMINATOR_SPECS,
                    "block": "bottleneck", "blocks_per_resolution": 2, "hierarchical_z": False},
}

# Paper widths and latent sizes (BigGAN-PyTorch launch scripts; compare_gan gin configs).
PAPER_SETTINGS = {
    "biggan_128": {"ch": 96, "z_dim": 120, "shared_dim": 128},
    "biggan_deep_128": {"ch": 128, "z_dim": 128, "shared_dim": 128},
}


def generator_spec(resolution):
    if resolution not in GENERATOR_SPECS:
        raise ValueError(f"resolution must be one of {sorted(GENERATOR_SPECS)}, received {resolution!r}")
    return GENERATOR_SPECS[resolution]


def discriminator_spec(resolution):
    if resolution not in DISCRIMINATOR_SPECS:
        raise ValueError(
            f"resolution must be one of {sorted(DISCRIMINATOR_SPECS)}, received {resolution!r}")
    return DISCRIMINATOR_SPECS[resolution]
