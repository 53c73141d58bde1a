"""The raw correlation view groups units on their squared correlations (WGCNA's
unsigned network, power 2), and never reports a coarse scale that joins the units of
the global mode to a module."""

import numpy as np
from sklearn.metrics import adjusted_rand_score

from saeatlas.structure import LeidenModules
from saeatlas.structure.graph.units import unit_correlation_graph
from saeatlas.structure.inference.shared_mode import absorbs_mode_groups, own_share

BLOCK = np.repeat([0, 1], 12)


def _bipolar(seed: int, n: int = 3000) -> np.ndarray:
    """Two independent factors, each read by twelve units, half of them with the
    opposite sign: two modules, each one axis whose sides fall as the others rise."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((n, 2))
    sign = np.tile(np.repeat([1.0, -1.0], 6), 2)
    return f[:, BLOCK] * sign + 0.7 * rng.standard_normal((n, 24))


def _modules(x: np.ndarray, unsigned: bool) -> np.ndarray:
    corr = np.corrcoef(x, rowvar=False)
    graph = unit_correlation_graph(corr, len(x), clean=False, unsigned=unsigned)
    return LeidenModules(random_state=0).fit(graph).labels_


def test_units_that_rise_as_others_fall_are_one_module_of_the_unsigned_graph():
    for seed in range(3):
        x = _bipolar(seed)
        assert adjusted_rand_score(BLOCK, _modules(x, unsigned=True)) == 1.0
        # the positive part drops the anti-correlated pairs: each axis shows as its sides
        sides = _modules(x, unsigned=False)
        assert np.unique(sides).size == 4 and adjusted_rand_score(BLOCK, sides) < 0.6


def test_a_coarse_scale_that_joins_the_modes_units_to_a_module_is_marked():
    rng = np.random.default_rng(0)
    n = 3000
    drive = 2 * rng.standard_normal((n, 2)) * (rng.random((n, 2)) < 0.3)
    g = rng.standard_normal((n, 1))
    blocks = drive[:, BLOCK] + 0.4 * g + 0.5 * rng.standard_normal((n, 24))
    free = 0.4 * g + 0.3 * rng.standard_normal((n, 8))  # held by the mode alone
    corr = np.corrcoef(np.hstack([blocks, free]), rowvar=False)
    fine = np.concatenate([BLOCK, np.full(8, 2)])
    joined = np.concatenate([BLOCK, np.full(8, 1)])  # the mode's units inside block 1
    apart = np.concatenate([BLOCK, np.full(8, -1)])  # left out: nothing absorbed

    def absorbs(levels):
        return absorbs_mode_groups(levels, [own_share(corr, lab, unsigned=True) for lab in levels])

    assert absorbs([joined, fine]) == [True, False]
    assert absorbs([apart, fine]) == [False, False]


def test_opposition_of_modules_that_hold_both_sides_of_an_axis():
    from saeatlas.structure.inference.partition_fit import opposition

    corr = np.corrcoef(_bipolar(0), rowvar=False)
    # two modules, each one whole axis: not opposed, though each averages a correlation
    # near 0 within (read signed, a chance negative mean between them is divided by it)
    assert opposition(corr, BLOCK, unsigned=True) < 0.05
    # an axis cut into its two sides: opposed as strongly as correlated within
    sides = np.repeat([0, 1, -1, -1], 6)
    assert opposition(corr, sides, unsigned=True) > 0.9
