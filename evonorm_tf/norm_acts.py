"""The built-in norm-acts: one `NormActSpec` each, registered on import.

Adding a norm-act to the package is one spec here, its core mixin in
`evonorm_tf.norm_act_core` (which calls its formula in `evonorm_tf.formulas`),
and its tests: both front-ends build their layer class from the spec, and the
factories, `NORM_ACT_NAMES` and the extensions read it from the registry.
"""

from evonorm_tf import arguments, baseline_core, norm_act_core as core, registry
from evonorm_tf.registry import NormActSpec

_PAPER = "Liu, Brock, Simonyan, Le. Evolving Normalization-Activation Layers. arXiv:2004.02967"

_B_DEFAULTS = {"epsilon": 1e-5, "momentum": 0.9}
_S_DEFAULTS = {"epsilon": 1e-5, "groups": arguments.DEFAULT_GROUPS}

BUILT_IN = (
    NormActSpec("bn_relu", "BatchNormReLU", baseline_core.BatchNormActCore, "batch_norm",
                "relu((x − mean_bhw) / sqrt(s2_bhw + ε)·γ + β)", batch_dependent=True,
                post_activation="relu", defaults=_B_DEFAULTS, keras_base="BatchNormalization"),
    NormActSpec("bn_silu", "BatchNormSiLU", baseline_core.BatchNormActCore, "batch_norm",
                "silu((x − mean_bhw) / sqrt(s2_bhw + ε)·γ + β)", batch_dependent=True,
                post_activation="silu", defaults=_B_DEFAULTS, keras_base="BatchNormalization"),
    NormActSpec("gn_relu", "GroupNormReLU", baseline_core.GroupNormActCore, "group_norm",
                "relu((x − mean_hwg) / sqrt(s2_hwg + ε)·γ + β)", batch_dependent=False,
                post_activation="relu", defaults=_S_DEFAULTS),
    NormActSpec("gn_silu", "GroupNormSiLU", baseline_core.GroupNormActCore, "group_norm",
                "silu((x − mean_hwg) / sqrt(s2_hwg + ε)·γ + β)", batch_dependent=False,
                post_activation="silu", defaults=_S_DEFAULTS),
    NormActSpec("frn_tlu", "FilterResponseNormTLU", baseline_core.FilterResponseNormTLUCore,
                "filter_response_norm", "max(x / sqrt(mu2_hw + ε)·γ + β, τ)", batch_dependent=False,
                post_activation="tlu", defaults={"epsilon": 1e-5}),
    NormActSpec("evonorm_b0", "EvoNormB0", core.EvoNormB0Core, "evonorm_b",
                "x / max(sqrt(s2_bhw + ε), v·x + sqrt(s2_hw + ε))", batch_dependent=True,
                defaults=_B_DEFAULTS),
    NormActSpec("evonorm_b1", "EvoNormB1", core.EvoNormB1Core, "evonorm_b",
                "x / max(sqrt(s2_bhw + ε), (x + 1)·sqrt(mu2_hw + ε))", batch_dependent=True,
                defaults=_B_DEFAULTS),
    NormActSpec("evonorm_b2", "EvoNormB2", core.EvoNormB2Core, "evonorm_b",
                "x / max(sqrt(s2_bhw + ε), sqrt(mu2_hw + ε) − x)", batch_dependent=True,
                defaults=_B_DEFAULTS),
    NormActSpec("evonorm_s0", "EvoNormS0", core.EvoNormS0Core, "evonorm_s",
                "x·σ(v·x) / sqrt(s2_hwg + ε)", batch_dependent=False, defaults=_S_DEFAULTS),
    NormActSpec("evonorm_s1", "EvoNormS1", core.EvoNormS1Core, "evonorm_s",
                "x·σ(x) / sqrt(s2_hwg + ε)", batch_dependent=False, defaults=_S_DEFAULTS),
    NormActSpec("evonorm_s2", "EvoNormS2", core.EvoNormS2Core, "evonorm_s",
                "x·σ(x) / sqrt(mu2_hwg + ε)", batch_dependent=False, defaults=_S_DEFAULTS),
)

for _spec in BUILT_IN:
    registry.register(_spec)
    if _spec.family in ("evonorm_b", "evonorm_s"):
        # An EvoNorm's docstring is its formula and the arguments of its series.
        series = core.B_SERIES_ARGUMENTS if _spec.family == "evonorm_b" else core.S_SERIES_ARGUMENTS
        title = "EvoNorm-" + _spec.name[-2:].upper()
        _spec.core.__doc__ = (
            f"{title}: `{_spec.formula} · γ + β`.\n{core.COMMON_ARGUMENTS}{series}\n"
            f"    Reference: {_PAPER}\n"
        )
