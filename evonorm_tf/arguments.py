"""Validation of the arguments shared by every norm-act layer.

Each check raises a `ValueError` (or `TypeError` for a wrong type) that quotes
the value received, so a bad configuration fails where it is written and not
deep inside a traced graph.
"""

import numbers

DATA_FORMATS = ("channels_last", "channels_first")
SUPPORTED_RANKS = (3, 4, 5)
DEFAULT_GROUPS = 32  # the authors' G


def check_data_format(data_format):
    if data_format not in DATA_FORMATS:
        raise ValueError(
            f"data_format must be one of {DATA_FORMATS}, received data_format={data_format!r}"
        )
    return data_format


def data_format_from_axis(axis, data_format):
    """The data format given `axis` as Keras normalization layers take it.

    `axis=-1` is the channels-last layout and `axis=1` channels-first; any
    other non-negative axis means channels-last and is checked against the
    input's rank when the layer is built (`check_axis_matches`). With both
    arguments given they must agree; with neither the layout is channels-last.
    """
    if axis is None:
        return check_data_format("channels_last" if data_format is None else data_format)
    if isinstance(axis, (list, tuple)) and len(axis) == 1:
        axis = axis[0]
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or axis == 0 or axis < -1:
        raise ValueError(
            f"axis must be the channel axis (-1, 1, or the last axis as a positive index), "
            f"received axis={axis!r}"
        )
    implied = "channels_first" if axis == 1 else "channels_last"
    if data_format is not None and check_data_format(data_format) != implied:
        raise ValueError(
            f"axis={axis!r} means data_format={implied!r}, but data_format={data_format!r} was given"
        )
    return implied


def check_axis_matches(axis, rank):
    """Raises unless a positive channels-last `axis` is the last axis of inputs of `rank`."""
    if isinstance(axis, (list, tuple)) and len(axis) == 1:
        axis = axis[0]
    if axis is None or axis in (-1, 1) or axis == rank - 1:
        return
    raise ValueError(
        f"axis={axis} is neither the first (1) nor the last ({rank - 1}) channel axis "
        f"of inputs of rank {rank}"
    )


def check_epsilon(epsilon):
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise TypeError(f"epsilon must be a positive number, received epsilon={epsilon!r}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, received epsilon={epsilon!r}")
    return float(epsilon)


def check_momentum(momentum):
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"momentum must be a number in [0, 1), received momentum={momentum!r}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), received momentum={momentum!r}")
    return float(momentum)


def check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, received {name}={value!r}")
    return value


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, received {name}={value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, received {name}={value!r}")
    return int(value)


def check_grouping(groups, group_size):
    """Validates the mutually exclusive `groups` / `group_size` pair.

    `groups=None, group_size=None` means the default of 32 groups, so
    `group_size` can be given on its own. Returns `(groups, group_size)` with
    exactly one of them set.
    """
    if groups is not None and group_size is not None:
        raise ValueError(
            "groups and group_size are mutually exclusive, received "
            f"groups={groups!r} and group_size={group_size!r}; set one to None"
        )
    if groups is None and group_size is None:
        return DEFAULT_GROUPS, None
    if groups is not None:
        return _check_positive_int("groups", groups), None
    return None, _check_positive_int("group_size", group_size)


def resolve_groups(groups, group_size, channels):
    """Number of groups for `channels` channels; raises if they do not divide."""
    if group_size is not None:
        if channels % group_size:
            raise ValueError(
                f"group_size={group_size} does not divide channels={channels}"
            )
        return channels // group_size
    check_groups_divide(groups, channels)
    return groups


def check_groups_divide(groups, channels):
    if channels is None:
        raise ValueError("the channel dimension must be known, received channels=None")
    if groups < 1 or channels % groups:
        raise ValueError(f"groups={groups} does not divide channels={channels}")


def check_input_shape(input_shape, data_format):
    """Checks rank and channel dimension; returns the number of channels."""
    shape = tuple(input_shape)
    if len(shape) not in SUPPORTED_RANKS:
        raise ValueError(
            f"inputs must have rank 3, 4 or 5 ([N, *spatial, C] or [N, C, *spatial]), "
            f"received input shape {shape} of rank {len(shape)}"
        )
    channels = shape[-1] if data_format == "channels_last" else shape[1]
    if channels is None:
        raise ValueError(
            f"the channel dimension must be known ({data_format}), received input shape {shape}"
        )
    return int(channels)
