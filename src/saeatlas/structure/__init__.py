"""The atlas: modules of units, the SAE feature communities behind them, and their significance."""

from .atlas import Atlas, AtlasFileError
from .codes import Codes, encode_store
from .config import AtlasConfig
from .cooccurrence import Cooccurrence, build_graph, count_cooccurrence
from .finders import LeidenModules, SpectralModules, modularity
from .mapping import map_structure
from .planted import PlantedConfig, PlantedData, make_planted, save_planted

__all__ = [
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
    "encode_store",
    "make_planted",
    "map_structure",
    "modularity",
    "save_planted",
]
