"""The atlas: modules of units, the SAE feature communities behind them, and their significance."""

from .analyze import analyze
from .atlas import Atlas, AtlasFileError
from .config import AtlasConfig
from .graph.codes import Codes, encode_store
from .graph.cooccurrence import Cooccurrence, count_cooccurrence
from .graph.edges import build_graph, densest_graph
from .graph.finders import LeidenModules, SpectralModules, modularity
from .mapping import map_structure
from .synthetic.config import PlantedConfig
from .synthetic.planted import PlantedData, make_planted, save_planted

__all__ = [
    "analyze",
    "Atlas",
    "AtlasConfig",
    "AtlasFileError",
    "Codes",
    "Cooccurrence",
    "LeidenModules",
    "PlantedConfig",
    "PlantedData",
    "SpectralModules",
    "build_graph",
    "count_cooccurrence",
    "densest_graph",
    "encode_store",
    "make_planted",
    "map_structure",
    "modularity",
    "save_planted",
]
