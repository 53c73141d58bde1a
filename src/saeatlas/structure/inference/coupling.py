"""Which module each unit joins: the unit whose energy follows the module's activity.

The consensus (:mod:`.consensus`) says which modules the ensemble reproduces; at a
module's edge it is unsure. Each member places a unit by the energy its own
feature communities write into it (:func:`..graph.units.project_modules`), and a
unit on a module's edge gets energy from several modules, so which one wins
depends on how that member's dictionary split the features: on the planted
``layered`` case (``saeatlas validate``) a member moved about 14 of 144 units
against its neighbours, and four analyses of one dataset with other seeds agreed
at unit ARI 0.74-0.86, even though every one found every planted module.

So the final step asks the data, with the ensemble's modules as the question:

- **module energy** ``A_k``: per row, the summed squared activation of the features
  of module ``k`` in one SAE of the ensemble (its feature communities matched to
  the consensus modules, :func:`feature_modules`), standardised over the rows,
  then averaged over the ensemble's SAEs. How a dictionary splits a module into
  features no longer matters, only which features belong to it.
- **coupling** ``c_uk = corr(z_u^2, A_k)``: how closely the energy of unit ``u`` (its
  squared standardised activation ``z_u``, the units' global mode taken out)
  follows module ``k``'s energy, from one pass over the atlas's rows
  (:func:`energy_coupling`). Energy, not activation:
  a feature writes a unit with either sign, so a module's summed activation does
  not follow its own units (on the ``layered`` case, with the planted features
  themselves: median correlation 0.00 with their module's units; of the energies,
  0.27).
- **assignment** (:func:`assign_units`): for module ``k``, a unit is a candidate
  when its coupling is at least halfway between the mean coupling of the
  consensus module's units and that of all other units (the boundary a
  nearest-mean classifier draws between the two groups; no threshold to tune,
  and a module holding half of all units keeps its weaker members). A unit
  joins, among its candidates, the module it follows most closely; a candidate
  of none is in no module. The energy refines a module's edge; it may not remake
  the module: one whose units by coupling match its consensus units at Jaccard
  under 0.5 is dropped (on planted data the match is 0.76-1.0; a random
  dictionary's consensus modules, cutting across the planted ones, were remade
  into halves of the planted modules by their energy, and are dropped).

Measured on four analyses (seeds 0-3) of one planted dataset each: the analyses'
pairwise unit ARI went from 0.74-0.86 to 0.95-0.97 (``layered``) and from
0.83-0.91 to 0.95-0.97 (``superposition``), their ARI against the planted modules
from 0.76-0.83 to 0.79-0.83 and from 0.70-0.75 to 0.83-0.88, every planted module
found in each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch

from ..._coordinator import Coordinator
from ..graph.codes import Codes, atlas_batches
from ..graph.finders import onehot

if TYPE_CHECKING:
    from ...store import ActivationStore


def feature_modules(
    community_units: np.ndarray, feature_community: np.ndarray, unit_modules: np.ndarray
) -> np.ndarray:
    """``[d_sae]`` an SAE's feature communities (``feature_community``, -1 none, with
    ``community_units`` ``[n_units]`` the units each community projects onto)
    relabelled to the unit modules ``unit_modules`` (-1 none): a community joins the
    module its units match at Jaccard >= 0.5 (the best match); communities matching
    none stay out (-1)."""
    out = np.full(feature_community.shape, -1)
    n_mod = int(unit_modules.max(initial=-1)) + 1
    if n_mod == 0:
        return out
    size = np.bincount(unit_modules[unit_modules >= 0], minlength=n_mod)
    for c in range(int(feature_community.max(initial=-1)) + 1):
        mine = community_units == c
        if not mine.any():
            continue
        inter = np.bincount(unit_modules[mine & (unit_modules >= 0)], minlength=n_mod)
        j = inter / (mine.sum() + size - inter)
        best = int(np.argmax(j))
        if j[best] >= 0.5:
            out[feature_community == c] = best
    return out


def module_energy(
    codes: Sequence[sp.csr_matrix], feature_module: Sequence[np.ndarray], n_modules: int
) -> np.ndarray:
    """``[n_rows, n_modules]`` each module's energy per row, pooled over dictionaries:
    for every SAE (its codes ``[n_rows, d_sae]`` and its features' modules, -1 none)
    the summed squared activation of the module's features, standardised over the
    rows (a module without features in that SAE adds nothing), averaged over the
    SAEs."""
    total = np.zeros((codes[0].shape[0], n_modules))
    for matrix, fm in zip(codes, feature_module, strict=True):
        m = sp.csr_matrix(matrix)
        # squared activations beside the codes' own index arrays (no copy of them)
        sq = sp.csr_matrix((np.square(m.data, dtype=np.float32), m.indices, m.indptr), m.shape)
        energy = (sq @ onehot(fm, n_modules, dtype=np.float32)).toarray().astype(np.float64)
        sd = energy.std(axis=0)
        total += np.where(sd > 0, (energy - energy.mean(axis=0)) / np.where(sd > 0, sd, 1.0), 0.0)
    return total / max(len(codes), 1)


@torch.no_grad()
def energy_coupling(
    store: ActivationStore,
    codes: Codes,
    energy: np.ndarray,
    *,
    batch_size: int,
    max_rows: int | None,
    device: str,
    coord: Coordinator,
    mode: np.ndarray | None = None,
) -> np.ndarray:
    """``[n_units, n_modules]`` the correlation over the codes' rows of each unit's
    squared standardised activation with each module's ``energy`` (``[n_rows,
    n_modules]``, standardised: :func:`module_energy`).

    ``mode``: the units' global mode (unit norm, :func:`..graph.units.global_mode`),
    taken out of the standardised activations first (``z - (z . mode) mode``): the
    mode is no module, and its share of a unit's energy hid the module the rest
    follows.

    One pass over the rows ``codes`` was encoded from (the same ``batch_size`` and
    ``max_rows``); under ``torchrun`` each rank reads its share and the sums are
    reduced (:meth:`Coordinator.sum_arrays`)."""
    dev = torch.device(device)
    names = [l.name for l in codes.layers]
    mean = torch.from_numpy(codes.unit_mean).to(dev, torch.float64)
    std = torch.from_numpy(np.where(codes.unit_std > 0, codes.unit_std, 1.0)).to(dev, torch.float64)
    n_units, n_modules = codes.unit_mean.size, energy.shape[1]
    s1 = torch.zeros(n_units, dtype=torch.float64, device=dev)
    s2 = torch.zeros_like(s1)
    cross = torch.zeros((n_units, n_modules), dtype=torch.float64, device=dev)
    v = None if mode is None else torch.from_numpy(np.asarray(mode, np.float64)).to(dev)
    for _, position, x in atlas_batches(store, names, batch_size, max_rows, coord):
        z = (x.to(dev, torch.float64) - mean) / std
        if v is not None:
            z -= torch.outer(z @ v, v)
        z2 = z**2
        a = torch.from_numpy(energy[position : position + x.shape[0]]).to(dev)
        s1 += z2.sum(0)
        s2 += (z2 * z2).sum(0)
        cross += z2.T @ a
    s1, s2, cross = coord.sum_arrays([t.cpu().numpy() for t in (s1, s2, cross)])
    n = max(codes.n_rows, 1)
    sd = np.sqrt(np.maximum(s2 / n - (s1 / n) ** 2, 0.0))
    # the energy has mean 0 and variance 1 over the rows: its covariance is sum(z2 a) / n
    return np.where(sd[:, None] > 0, cross / n / np.where(sd > 0, sd, 1.0)[:, None], 0.0)


#: A module whose units by coupling match its consensus units below this Jaccard is
#: dropped: the energy did not confirm it (Hennig's 0.5, as for reproducibility).
KEPT_JACCARD = 0.5


def assign_units(coupling: np.ndarray, consensus: np.ndarray) -> np.ndarray:
    """``[n_units]`` each unit's module (-1 none) from its ``coupling`` ``[n_units,
    n_modules]`` with each consensus module (``consensus`` ``[n_units]``, -1 none):
    candidates of module ``k`` couple at least halfway between the mean coupling of
    ``k``'s consensus units and that of the other units; a unit joins the candidate
    module it couples to most (see the module docstring). A module whose units then
    match its consensus units below :data:`KEPT_JACCARD` is dropped (its units -1)."""
    n_units, n_modules = coupling.shape
    if n_modules == 0:
        return np.full(n_units, -1)
    cut = np.full(n_modules, np.inf)
    for k in range(n_modules):
        inside = consensus == k
        if not inside.any():
            continue
        if inside.all():  # no other units to tell it from: its consensus units stay
            cut[k] = coupling[:, k].min()
        else:
            cut[k] = 0.5 * (coupling[inside, k].mean() + coupling[~inside, k].mean())
    candidate = np.where(coupling >= cut[None, :], coupling, -np.inf)
    best = candidate.argmax(axis=1)
    labels = np.where(np.isfinite(candidate[np.arange(n_units), best]), best, -1)
    for k in range(n_modules):  # the energy must confirm the module, not replace it
        now, before = labels == k, consensus == k
        if (now & before).sum() < KEPT_JACCARD * (now | before).sum():
            labels[now] = -1
    return labels
