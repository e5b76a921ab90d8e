"""The norm-act registry: one table from a name to everything known about it.

Every norm-act of the package is one `NormActSpec`, registered once
(`evonorm_tf.norm_acts` registers the built-in ones). Everything else is
derived from the table: the layer classes of both front-ends (Keras 3 in
`evonorm_tf.layers`, tf_keras in `evonorm_tf.tf_keras.layers`), both
`get_norm_act` factories, `NORM_ACT_NAMES`, the arguments each name accepts,
and what extensions need to know (which family a name belongs to, whether it
uses batch statistics, which activation follows its affine map).

Extensions add names without being imported by the core: a family of names
sharing a prefix (the layer search registers `"graph:<canonical>"`) is
registered with `register_prefix` when the extension is imported.

    from evonorm_tf import registry

    registry.spec("evonorm_s0").defaults["groups"]     # 32
    registry.layer_class("evonorm_s0", "tf_keras")     # the tf_keras EvoNormS0
"""

import dataclasses
import inspect
import types

__all__ = [
    "FRONT_ENDS",
    "NormActSpec",
    "accepted_arguments",
    "build",
    "class_arguments",
    "layer_class",
    "layer_table",
    "names",
    "register",
    "register_front_end",
    "register_prefix",
    "spec",
    "specs",
]

#: The two Keras front-ends: Keras 3 (`keras`) and Keras 2 (`tf_keras`, Model Garden).
FRONT_ENDS = ("keras", "tf_keras")

FAMILIES = ("batch_norm", "group_norm", "filter_response_norm", "evonorm_b", "evonorm_s")


@dataclasses.dataclass(frozen=True)
class NormActSpec:
    """What the package knows about one norm-act name.

    Attributes:
      name: the factory name, lower case (`"evonorm_s0"`).
      class_name: the name of the layer class in both front-ends (`"EvoNormS0"`).
      core: the framework-independent mixin of `evonorm_tf.norm_act_core`
        that validates arguments, creates weights and calls the formula.
      family: one of `FAMILIES`; layers of one family share their arguments.
      formula: the output as written in the docs (`x·σ(v·x) / sqrt(s2_hwg + ε)`).
      batch_dependent: True if training uses batch statistics (and inference
        moving statistics): BN and the B-series.
      post_activation: the activation that follows the affine map
        (`"relu"`, `"silu"`, `"tlu"`), or None where the non-linearity is
        inside the formula (the EvoNorms).
      defaults: documented default arguments (`groups`, `epsilon`, ...).
      keras_base: the Keras base class the front-ends mix the core into:
        `"Layer"`, or `"BatchNormalization"` for BN, which keeps each
        front-end's own (fused) BatchNormalization.
    """

    name: str
    class_name: str
    core: type
    family: str
    formula: str
    batch_dependent: bool
    post_activation: str = None
    defaults: types.MappingProxyType = dataclasses.field(default_factory=dict)
    keras_base: str = "Layer"

    def __post_init__(self):
        if not isinstance(self.name, str) or self.name != self.name.strip().lower() or not self.name:
            raise ValueError(f"a norm-act name is lower case without spaces, received name={self.name!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, received family={self.family!r}")
        if self.keras_base not in ("Layer", "BatchNormalization"):
            raise ValueError(
                f"keras_base must be 'Layer' or 'BatchNormalization', received {self.keras_base!r}"
            )
        object.__setattr__(self, "defaults", types.MappingProxyType(dict(self.defaults)))


_SPECS = {}
_PREFIXES = {}  # prefix → {front_end: layer class taking the full name as `graph`-like first argument}
_CLASS_MAKERS = {}  # front_end → function(spec) → layer class
_CLASSES = {}  # (front_end, name) → layer class


def register(norm_act_spec):
    """Adds a norm-act to the table; a name can be registered once."""
    if not isinstance(norm_act_spec, NormActSpec):
        raise TypeError(f"register takes a NormActSpec, received {norm_act_spec!r}")
    if norm_act_spec.name in _SPECS:
        raise ValueError(f"norm-act {norm_act_spec.name!r} is already registered")
    _SPECS[norm_act_spec.name] = norm_act_spec
    return norm_act_spec


def register_prefix(prefix, layer_classes, describe, name_argument):
    """Registers a family of names `"<prefix><rest>"` served by an extension.

    Args:
      prefix: e.g. `"graph:"`; names are matched case-insensitively.
      layer_classes: `{front_end: class}`; the class is called with the whole
        name as its `name_argument` and the factory's keyword arguments.
      describe: how error messages name the family (`"graph:<canonical>"`).
      name_argument: the class's argument that takes the name (`"graph"`).
    """
    prefix = prefix.strip().lower()
    unknown = sorted(set(layer_classes) - set(FRONT_ENDS))
    if unknown:
        raise ValueError(f"front-ends must be among {FRONT_ENDS}, received {unknown}")
    _PREFIXES[prefix] = (dict(layer_classes), describe, name_argument)


def register_front_end(front_end, make_class):
    """Called by a front-end module: `make_class(spec)` builds its layer class for a spec."""
    if front_end not in FRONT_ENDS:
        raise ValueError(f"front_end must be one of {FRONT_ENDS}, received {front_end!r}")
    _CLASS_MAKERS[front_end] = make_class


def names():
    """The registered names, in registration order."""
    return tuple(_SPECS)


def specs():
    """The registered specs, in registration order."""
    return tuple(_SPECS.values())


def _key(name):
    if not isinstance(name, str):
        raise TypeError(f"norm-act name must be a string, received {name!r}")
    return name.strip().lower()


def _prefix_of(key):
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return prefix
    return None


def _unknown(name):
    valid = ", ".join(sorted(_SPECS))
    families = "".join(f", or {describe}" for _, describe, _ in _PREFIXES.values())
    return ValueError(f"unknown norm-act name {name!r}; valid names: {valid}{families}")


def spec(name):
    """The spec of `name` (case-insensitive); ValueError listing the valid names."""
    key = _key(name)
    if key not in _SPECS:
        raise _unknown(name)
    return _SPECS[key]


def is_known(name):
    """True if `name` is a registered name or matches a registered prefix."""
    key = _key(name)
    return key in _SPECS or _prefix_of(key) is not None


def layer_class(name, front_end):
    """The layer class of `name` for `front_end` (`"keras"` or `"tf_keras"`).

    For a prefixed name (`"graph:..."`) this is the extension's class, which
    takes the full name as its first argument.
    """
    if front_end not in FRONT_ENDS:
        raise ValueError(f"front_end must be one of {FRONT_ENDS}, received {front_end!r}")
    key = _key(name)
    prefix = _prefix_of(key)
    if prefix is not None:
        classes, describe, _ = _PREFIXES[prefix]
        if front_end not in classes:
            raise ValueError(f"{describe} has no {front_end} layer, received {name!r}")
        return classes[front_end]
    norm_act_spec = spec(name)
    if (front_end, key) not in _CLASSES:
        if front_end not in _CLASS_MAKERS:
            module = "evonorm_tf.layers" if front_end == "keras" else "evonorm_tf.tf_keras"
            raise RuntimeError(f"the {front_end} front-end is not loaded; import {module} first")
        _CLASSES[(front_end, key)] = _CLASS_MAKERS[front_end](norm_act_spec)
    return _CLASSES[(front_end, key)]


def build(name, front_end, /, **kwargs):
    """A new layer `name` of `front_end` with `kwargs`."""
    key = _key(name)
    klass = layer_class(key, front_end)
    prefix = _prefix_of(key)
    if prefix is not None:
        return klass(**{_PREFIXES[prefix][2]: name.strip()}, **kwargs)
    return klass(**kwargs)


def class_arguments(klass):
    """The keyword arguments `klass` accepts in its own and its bases' `__init__`."""
    accepted = set()
    for base in klass.__mro__:
        if "__init__" in vars(base):
            accepted.update(
                parameter.name
                for parameter in inspect.signature(base.__init__).parameters.values()
                if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
            )
    accepted.discard("self")
    return accepted


def accepted_arguments(name, front_end="tf_keras"):
    """The keyword arguments the layer `name` accepts (for a prefixed name, less the name's own)."""
    key = _key(name)
    accepted = class_arguments(layer_class(key, front_end))
    prefix = _prefix_of(key)
    if prefix is not None:
        accepted.discard(_PREFIXES[prefix][2])
    return accepted


def layer_table():
    """The registered norm-acts as a Markdown table (README.md's "Layers" table is this text)."""
    rows = [
        "| name | class | family | output (then `·γ + β` unless shown) | batch statistics |",
        "|---|---|---|---|---|",
    ]
    for norm_act_spec in specs():
        if not norm_act_spec.batch_dependent:
            batch = "no"
        elif norm_act_spec.family == "batch_norm":
            batch = "yes (moving mean and variance at inference)"
        else:
            batch = "yes (moving `s2_bhw` at inference)"
        rows.append(
            f"| `{norm_act_spec.name}` | `{norm_act_spec.class_name}` | {norm_act_spec.family} "
            f"| `{norm_act_spec.formula}` | {batch} |"
        )
    return "\n".join(rows) + "\n"
