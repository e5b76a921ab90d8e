"""The configuration of one search (`SearchConfig`, stored as `config.json`)."""

import dataclasses

from evonorm_tf.search import proxy, space

METHODS = ("evolution", "random_rejection", "random")
RULES = ("pareto", "average")

# Keys that must agree when a directory is resumed: they decide which records a search writes.
RESUME_KEYS = ("method", "series", "rule", "population_size", "tournament_size", "feedback_delay",
               "anchors", "data", "train_steps", "quality_steps", "quality_threshold",
               "stability_steps", "stability_anchors", "seed")

_POSITIVE = ("population_size", "tournament_size", "feedback_delay", "image_size", "width",
             "train_steps", "batch_size", "quality_steps")
_NON_NEGATIVE = ("stability_steps", "workers")


@dataclasses.dataclass
class SearchConfig:
    """Everything that defines a search.

    Budget: the search stops once `max_candidates` candidates have been
    evaluated (duplicates not counted) or `budget_steps` compute units are
    spent (one unit = one training step of one anchor; a stress-test step
    counts 3), whichever comes first (`None` = no limit).

    Budgets of the rejection tests (arXiv:2004.02967 §4.2): the quality test
    scores every anchor after `quality_steps` (100, as the paper) and the
    stress test runs gradient-norm ascent for up to `stability_steps` (100,
    as the paper) on every anchor named in `stability_anchors` (default: all).

    Reproducibility: proposal `k` is drawn from a random generator keyed by
    `(seed, k)` and sees only the records of proposals `1 .. k -
    feedback_delay`, so the records do not depend on how many workers ran
    or when the search was interrupted.
    """

    method: str = "evolution"
    series: str = "B"                      # "B": all 24 ops; "S": no batch statistics
    rule: str = "pareto"
    population_size: int = 6
    tournament_size: int = 3
    feedback_delay: int = 4
    max_candidates: int = None
    budget_steps: int = None
    anchors: tuple = proxy.ANCHORS
    data: str = "digits"                   # see docs/search.md for the calibration
    data_dir: str = None
    num_train: int = None                  # None: the data set's default (textures: 4096)
    num_test: int = None                   # None: textures 1024, digits 397, cifar10 10,000
    image_size: int = 16
    noise: float = 0.1
    width: int = 8
    train_steps: int = 100
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 0.003
    quality_steps: int = 100
    quality_threshold: float = 0.2        # twice chance, the paper's rule
    stability_steps: int = 100
    stability_threshold: float = 1e8
    stability_learning_rate: float = 1.0
    stability_anchors: tuple = None        # None: every anchor
    seed: int = 0
    workers: int = 2
    ray_address: str = None

    def __post_init__(self):
        self.anchors = tuple(self.anchors)
        if self.stability_anchors is None:
            self.stability_anchors = self.anchors
        self.stability_anchors = tuple(self.stability_anchors)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, received {self.method!r}")
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, received {self.rule!r}")
        if self.series not in ("B", "S"):
            raise ValueError(f"series must be 'B' or 'S', received {self.series!r}")
        if not self.anchors:
            raise ValueError("anchors must name at least one anchor, received none")
        for anchor in self.anchors + self.stability_anchors:
            if anchor not in proxy.ANCHOR_BUILDERS:
                raise ValueError(f"unknown anchor {anchor!r}; valid: {', '.join(proxy.ANCHORS)}")
        for name in _POSITIVE:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, received {getattr(self, name)!r}")
        for name in _NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, received {getattr(self, name)!r}")
        for name in ("max_candidates", "budget_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, received {getattr(self, name)!r}")
        if self.method == "evolution" and not 2 <= self.tournament_size <= self.population_size:
            raise ValueError(
                f"need 2 <= tournament_size <= population_size, received "
                f"tournament_size={self.tournament_size}, population_size={self.population_size}"
            )
        if self.quality_steps > self.train_steps:
            raise ValueError(f"quality_steps must not exceed train_steps ({self.train_steps}), "
                             f"received {self.quality_steps}")
        if self.max_candidates is None and self.budget_steps is None:
            raise ValueError("set max_candidates or budget_steps, received neither")

    @property
    def ops(self):
        return space.op_names(batch_statistics=self.series == "B")

    @property
    def rejection(self):
        return self.method != "random"

    def to_dict(self):
        value = dataclasses.asdict(self)
        value["anchors"] = list(self.anchors)
        value["stability_anchors"] = list(self.stability_anchors)
        return value

    @classmethod
    def from_dict(cls, value):
        """A config from a stored `config.json` (unknown keys ignored)."""
        fields = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: item for key, item in value.items() if key in fields})

    def evaluation(self):
        """The plain-data part a worker needs to evaluate a candidate."""
        keys = ("data", "data_dir", "num_train", "num_test", "image_size", "noise",
                "width", "train_steps", "batch_size", "optimizer", "learning_rate", "quality_steps",
                "quality_threshold", "stability_steps", "stability_threshold",
                "stability_learning_rate", "seed")
        value = {key: getattr(self, key) for key in keys}
        value["anchors"] = list(self.anchors)
        value["stability_anchors"] = list(self.stability_anchors)
        value["rejection"] = self.rejection
        return value
