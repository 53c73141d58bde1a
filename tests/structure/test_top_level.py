"""Which map comes first: the SAE's counted modules, or the units' correlation modules
as a coarser map of them (``mapping._correlations_first``)."""

import numpy as np

from saeatlas.structure.inference.consensus import level_consensus
from saeatlas.structure.inference.correlation import CorrelationView
from saeatlas.structure.mapping import _correlations_first

# four SAE modules of 30 units each, then 24 units in no module (the free units)
SAE = np.concatenate([np.repeat(np.arange(4), 30), np.full(24, -1)])
COUNTED = np.ones(4, bool)
FREE = SAE < 0


def _clean_view(*partitions: np.ndarray) -> CorrelationView:
    """A cleaned correlation view whose scales are ``partitions``, each reproduced by
    every one of six members."""
    levels = [level_consensus(np.stack([p] * 6), s) for p, s in zip(partitions, (0.5, 1, 2))]
    n = int(partitions[0].max()) + 1
    return CorrelationView(levels, 0, (), True, np.ones(n, bool), np.zeros(n), clean=True)


def test_a_module_of_the_free_units_is_no_coarser_map_of_the_sae_modules():
    """On `blocks` data the raw correlations, which hold the global mode, grouped the
    units outside every module (linked by the mode's loadings alone) into a fifth
    module; it was reported in place of the SAE's four planted modules."""
    corr = np.where(FREE, 4, SAE)
    clean = _clean_view(SAE)
    assert not _correlations_first(corr, SAE, COUNTED, clean)
    # the same modules, each grown by units the SAE left out: a fuller map, kept first
    grown = SAE.copy()
    grown[FREE] = np.arange(FREE.sum()) % 4
    assert _correlations_first(grown, SAE, COUNTED, clean)


def test_modules_merged_only_by_the_global_mode_are_no_coarser_level():
    """The raw correlations merged two planted modules that never fire together (and
    the free units) into one; without the global mode no scale merges them."""
    corr = np.where(FREE | (SAE == 1), 0, np.where(SAE > 1, SAE - 1, 0))
    assert not _correlations_first(corr, SAE, COUNTED, _clean_view(SAE, np.where(FREE, 0, SAE)))
    assert not _correlations_first(corr, SAE, COUNTED, None)
    # where the cleaned correlations merge them too (at any scale), the merge is a
    # coarser level of the structure: the parents of modules that fire together
    parents = np.where(SAE == 1, 0, SAE)
    assert _correlations_first(corr, SAE, COUNTED, _clean_view(SAE, parents))


def test_without_counted_sae_modules_the_correlations_come_first():
    corr = np.where(FREE, 4, SAE)
    assert _correlations_first(corr, SAE, np.zeros(4, bool), None)
    assert not _correlations_first(np.full(SAE.size, -1), SAE, np.zeros(4, bool), None)
    # an SAE module split between two correlation modules: the SAE's map stays first
    split = SAE.copy()
    split[:15] = 4
    assert not _correlations_first(np.where(FREE, 0, split), SAE, COUNTED, _clean_view(SAE))
