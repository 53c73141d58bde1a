"""Does the map depend on the sparsity chosen? Modules across a sweep's members.

A sparsity sweep trains SAEs that differ only in their sparsity (k, or the L1/L0
coefficient). Each member gets its modules of units on the atlas's rows (the
community step alone, :func:`..graph.communities.find_modules`), and the
partitions of neighbouring sparsities are compared by ARI over the units in a
module in either (:func:`.partitions.partition_ari`), as is each member's with
the atlas's own. High agreement says the map does not hinge on the choice of
sparsity; low agreement says it does, which the report shows beside the sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atlas import Atlas
from ..graph.communities import counts_in_parts, find_modules, graph_items
from .partitions import partition_ari

if TYPE_CHECKING:
    from ..._coordinator import Coordinator
    from ..inputs import AtlasInputs, SAELike


def sparsity_dependence(
    atlas: Atlas, inp: AtlasInputs, members: Sequence[tuple[float, SAELike]], over: str
) -> dict[str, Any]:
    """The modules of units of each sweep member (``(value, SAE)`` pairs, any order)
    compared between neighbouring values and with ``atlas``.

    Returns ``over``, ``values`` (sorted), ``n_modules`` per member,
    ``neighbour_ari`` (``len(values) - 1`` ARIs, value i with value i + 1) and
    ``atlas_ari`` (each member's with the atlas's unit modules); NaN is written
    as None.
    """
    ordered = sorted(members, key=lambda m: float(m[0]))
    ref = atlas.units["module"].to_numpy().astype(np.int64)
    firings = [inp.firing_of(sae) for _, sae in ordered]  # encoded by all ranks together

    def modules(i: int, coord: Coordinator | None) -> tuple[np.ndarray, int]:
        found = find_modules(firings[i], inp.cfg, coord=coord)
        return found.units.module.astype(np.int64), found.n_modules

    # the members' communities: shared among the ranks of a torchrun analysis, or
    # for large dictionaries computed by all of them, each graph counted in parts
    d_sae = max((f.codes.d_sae for f in firings), default=0)
    in_parts = counts_in_parts(inp.cfg, d_sae, inp.coord)
    found = graph_items(len(firings), modules, inp.coord, in_parts)
    labels, n_modules = [f[0] for f in found], [f[1] for f in found]
    neighbour = [partition_ari(a, b) for a, b in zip(labels, labels[1:])]
    return {
        "over": over,
        "values": [float(v) for v, _ in ordered],
        "n_modules": n_modules,
        "neighbour_ari": _json(neighbour),
        "atlas_ari": _json([partition_ari(ref, u) for u in labels]),
        "method": "modules of units of each sweep member on the atlas's rows; ARI over the "
        "units in a module in either partition",
    }


def _json(x) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(x, dtype=np.float64)]
