"""The layer search of Liu, Brock, Simonyan, Le 2020 (arXiv:2004.02967).

Modules, one per concept:
- `space`: the graph search space (initial nodes, 24 primitive ops, genomes,
  canonical graphs, formulas, the six EvoNorms as graphs).
- `compiler`: a graph as TensorFlow ops; `layers`: a graph as a norm-act layer
  for Keras 3 and tf_keras (`get_norm_act("graph:<canonical>")`, registered
  with the core registry when this package is imported).
- `mutation`: random genomes, the three-step mutation, functional-equivalence hashing.
- `proxy`: the proxy tasks (offline textures, TFDS cifar10) and the anchor architectures.
- `rejection`: quality, stability and numerical rejection.
- `config`: `SearchConfig`, the settings of one search.
- `evaluation`: one candidate through the rejection tests and the proxy training.
- `executors`: in-process, process-pool and Ray evaluation.
- `encoding`: genomes as PyGlove DNA.
- `evolution`: proposals: regularized evolution with the Average or Pareto tournament
  (PyGlove operators) and random search, keyed by proposal index.
- `loop`: the search loop (parallel evaluation, resume, SIGINT/SIGTERM).
- `store`: atomic persistence; `report`: leaderboard, Pareto front, summary, re-ranking;
  `plots`: progress plots; `comparison`: several seeds per method.
- `__main__`: the command line (`python -m evonorm_tf.search --help`).

Only `space`, `compiler` and `layers` are imported here; the others import
PyGlove and are loaded on use.
"""

from evonorm_tf import registry
from evonorm_tf.search import compiler, layers, space
from evonorm_tf.search.layers import GRAPH_PREFIX, GraphNormAct, TfKerasGraphNormAct
from evonorm_tf.search.space import EVONORM_GRAPHS, Genome, Graph

# Every searched graph is a norm-act name of both factories: `get_norm_act("graph:<canonical>")`.
registry.register_prefix(
    GRAPH_PREFIX,
    {"keras": GraphNormAct, "tf_keras": TfKerasGraphNormAct},
    describe=f"{GRAPH_PREFIX}<canonical> (a searched layer)",
    name_argument="graph",
)

__all__ = [
    "EVONORM_GRAPHS",
    "GRAPH_PREFIX",
    "Genome",
    "Graph",
    "GraphNormAct",
    "TfKerasGraphNormAct",
    "compiler",
    "layers",
    "space",
]
