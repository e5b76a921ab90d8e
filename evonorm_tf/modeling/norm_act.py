"""From a norm-act name and options to layers for a given channel count.

The backbones in `evonorm_tf.modeling` never branch on the norm type: they
hold a `NormActFactory` and call it once per norm-act position with the number
of channels and the role of that position:

    make_norm_act = NormActFactory("evonorm_s0", groups=32)
    x = make_norm_act(channels=256)(x)                               # norm + activation
    x = make_norm_act(channels=256, nonlinearity=False, zero_init=True)(x)  # affine only

Options a layer does not accept are dropped (`momentum` reaches only BN and the
B-series, `groups` only GN and the S-series), so one option set serves every
name.

Group rule. A grouped layer (GN, EvoNorm-S) is built with the largest group
count that divides its channels and is at most the requested `groups`: with
`groups=32`, 40 channels get 20 groups, 24 channels get 24 groups (group size
1), 256 channels get 32. This is the rule of the authors' code (it lowers the
group count until it divides the channels); it lets EfficientNet's 24-, 40-,
112- or 144-channel layers use the S-series without an error mid-build.
The rule itself is `evonorm_tf.arguments.divisor_groups`. It applies to the
default of 32 groups; a `groups` the user gives that does not divide a layer's
channels is a `ValueError` naming the layer at model construction, unless
`adjust_groups=True` (Model Garden configs: `norm_activation.adjust_groups`,
false by default, true for EfficientNet). Every adjustment is recorded in the
layer's config (`groups`) and logged once per backbone, listing the layers.
"""

import collections.abc

from absl import logging

from evonorm_tf import arguments, registry
from evonorm_tf import tf_keras as evonorm_tf_keras  # noqa: F401  (registers the tf_keras front-end)

divisor_groups = arguments.divisor_groups


class NormActFactory:
    """Builds tf_keras norm-act layers of one kind for any channel count.

    Args:
      name: a norm-act name of the registry (`bn_relu`, `evonorm_b0`,
        `evonorm_s0`, ... see `evonorm_tf.NORM_ACT_NAMES`), or a name an
        extension registered (`"graph:<canonical>"` once `evonorm_tf.search`
        is imported).
      data_format: `"channels_last"` or `"channels_first"`, passed to every layer.
      adjust_groups: True: `groups` follows the group rule above (each
        adjustment recorded in `adjusted_layers`, logged once per model by
        `log_adjustments`); False: a layer whose channels a given `groups`
        does not divide raises `ValueError`. Without `groups` the default of
        32 always follows the group rule (and is logged the same way).
      **options: layer arguments shared by every position (`epsilon`,
        `momentum`, `synchronized`, `groups`, ...). Options the layer class
        does not accept are ignored.

    Raises:
      ValueError: for an unknown name (listing the valid ones) or a bad option
        value (raised by the layer, quoting the value).
    """

    # Set per position by the model, never by the options.
    RESERVED_OPTIONS = ("nonlinearity", "gamma_initializer", "data_format", "name")

    def __init__(self, name, data_format="channels_last", adjust_groups=True, **options):
        reserved = sorted(set(options) & set(self.RESERVED_OPTIONS))
        if reserved:
            raise ValueError(
                f"norm-act options {reserved} are set by the model for each position; "
                f"received {{{', '.join(f'{key}={options[key]!r}' for key in reserved)}}}"
            )
        registry.layer_class(name, "tf_keras")  # an unknown name fails here, listing the valid ones
        self.name = name.strip() if ":" in name else name.strip().lower()
        self.accepted = registry.accepted_arguments(self.name, "tf_keras")
        self.data_format = arguments.check_data_format(data_format)
        if not isinstance(adjust_groups, bool):
            raise TypeError(f"adjust_groups must be a bool, received adjust_groups={adjust_groups!r}")
        self.adjust_groups = adjust_groups
        self.options = {key: value for key, value in options.items() if key in self.accepted}
        self.ignored_options = sorted(set(options) - set(self.options))
        self.adjusted_layers = []  # (layer name, channels, requested groups, groups used)
        # Validate the options once, here, rather than at the first layer.
        self(channels=self.options.get("groups") or self.options.get("group_size") or arguments.DEFAULT_GROUPS)
        self.adjusted_layers.clear()

    @property
    def is_grouped(self):
        return "groups" in self.accepted

    def __call__(self, channels, nonlinearity=True, zero_init=False, name=None):
        """A new layer for `channels` channels.

        Args:
          channels: the channel count of the input (used for the group rule).
          nonlinearity: False where a BN is not followed by an activation (a
            projection shortcut, a residual branch's last norm): BN then gives
            plain BN and an EvoNorm the affine map `x·γ + β`.
          zero_init: initialise γ to zeros (a residual branch's last norm).
          name: the layer name.
        """
        kwargs = dict(self.options)
        if self.is_grouped:
            if kwargs.get("group_size") is not None:
                kwargs["groups"] = None  # an explicit group size wins; it must divide
            else:
                # The default group count adjusts; a count the user gave adjusts only if asked to.
                explicit = kwargs.get("groups") is not None
                requested = kwargs["groups"] if explicit else arguments.DEFAULT_GROUPS
                kwargs["groups"] = divisor_groups(requested, channels)
                if kwargs["groups"] != requested:
                    if explicit and not self.adjust_groups:
                        raise ValueError(_indivisible_groups_message(self.name, name, requested, channels))
                    self.adjusted_layers.append((name, channels, requested, kwargs["groups"]))
        return registry.build(
            self.name,
            "tf_keras",
            nonlinearity=nonlinearity,
            gamma_initializer="zeros" if zero_init else "ones",
            data_format=self.data_format,
            name=name,
            **kwargs,
        )

    def log_adjustments(self, model_name):
        """Logs, in one line, the layers whose group count the group rule lowered; then forgets them."""
        if self.adjusted_layers:
            changed = ", ".join(
                f"{layer or '(unnamed)'} ({channels} channels: {used})"
                for layer, channels, _, used in self.adjusted_layers
            )
            logging.info(
                "%s: %s groups=%d lowered to the largest divisor of the channels in %d layers: %s",
                model_name, self.name, self.adjusted_layers[0][2], len(self.adjusted_layers), changed,
            )
        self.adjusted_layers = []

    def __repr__(self):
        return (f"NormActFactory({self.name!r}, data_format={self.data_format!r}, "
                f"adjust_groups={self.adjust_groups!r}, **{self.options!r})")


def _indivisible_groups_message(norm_act, layer_name, groups, channels):
    divisors = [str(value) for value in range(1, channels + 1) if channels % value == 0]
    if len(divisors) > 12:
        divisors = divisors[:6] + ["..."] + divisors[-3:]
    return (
        f"norm-act layer {layer_name or '(unnamed)'!r} ({norm_act}) has {channels} channels, which "
        f"groups={groups} does not divide; valid group counts divide {channels} ({', '.join(divisors)}), "
        "or set adjust_groups: true to use the largest divisor below groups"
    )


# Model Garden's model-level `norm_activation` fields (`task.model.norm_activation`,
# `official.vision.configs.common.NormActivation`) and the norm-act option each one sets.
MODEL_LEVEL_FIELDS = (
    ("momentum", "norm_momentum"),
    ("epsilon", "norm_epsilon"),
    ("synchronized", "use_sync_bn"),
)


def _field(source, name):
    if source is None:
        return None
    if isinstance(source, collections.abc.Mapping):
        return source.get(name)
    return getattr(source, name, None)


def options_from_config(norm_act_config, model_norm_activation=None):
    """The norm-act options of one model part, by the precedence rule.

    For `momentum`, `epsilon` and `synchronized` the value is, first found:

    1. the part's own field (`norm_act_config.momentum`, ...), when set (not None);
    2. Model Garden's model-level field (`norm_momentum`, `norm_epsilon`,
       `use_sync_bn` of `model_norm_activation`, i.e. `task.model.norm_activation`),
       as Model Garden hands it to its own module of that place;
    3. left out: the layer's default (0.9, 1e-5, False).

    `groups` has no model-level field: the part's own value, else the layer
    default (32, lowered by the group rule).

    Args:
      norm_act_config: an `evonorm_tf.configs.NormActivation` (or any object
        with `momentum`, `epsilon`, `synchronized` and `groups` attributes).
      model_norm_activation: Model Garden's model-level `NormActivation`, a
        mapping with its field names (e.g. a Model Garden head's
        `get_config()`), or None.

    Returns:
      A dict of the options that are set; None values are never included.
    """
    options = {}
    for option, model_level_field in MODEL_LEVEL_FIELDS:
        value = getattr(norm_act_config, option, None)
        if value is None:
            value = _field(model_norm_activation, model_level_field)
        if value is not None:
            options[option] = value
    groups = getattr(norm_act_config, "groups", None)
    if groups is not None:
        options["groups"] = groups
    return options


def norm_act_factory_from_config(norm_act_config, data_format="channels_last", model_norm_activation=None):
    """A `NormActFactory` from an `evonorm_tf.configs.NormActivation` config.

    `model_norm_activation` is Model Garden's model-level `norm_activation`
    (or None); `options_from_config` gives the precedence.
    """
    return NormActFactory(
        norm_act_config.type,
        data_format=data_format,
        **options_from_config(norm_act_config, model_norm_activation),
        adjust_groups=norm_act_config.adjust_groups,
    )


def as_factory(norm_act, data_format="channels_last", **options):
    """Accepts a name or a ready `NormActFactory` (then `options` must be empty)."""
    if isinstance(norm_act, NormActFactory):
        if options:
            raise ValueError(
                f"options {sorted(options)} given with a ready NormActFactory {norm_act!r}; "
                "pass a norm-act name instead"
            )
        if norm_act.data_format != data_format:
            raise ValueError(
                f"the norm-act factory has data_format={norm_act.data_format!r} but the model "
                f"has data_format={data_format!r}"
            )
        return norm_act
    return NormActFactory(norm_act, data_format=data_format, **options)
