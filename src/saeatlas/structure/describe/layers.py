"""Where modules live across layers, and how modules of consecutive layers are linked.

- :func:`module_layer_profile`: the share of each module's units in each layer.
- :func:`module_layer_mass`: the share of each module's features' standardised
  decoder energy ``(W_dec[f, u] / std_u)^2`` in each layer (for a joint
  multi-layer SAE, where one feature writes into several layers).
- :func:`layer_module_links`: the layers a module spans, by one stated rule.
- :func:`module_flows`: for modules ``A`` in layer ``l`` and ``B`` in layer
  ``l + 1``, how their activities co-vary across rows and how strongly what A's
  features write into layer ``l`` drives B's features through the SAE's encoder.

Like the modules themselves these are co-activation and weight statistics, not
causal claims: a flow says A and B are active together, or that the SAE reads
B from where A writes, not that layer ``l`` computes B from A.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...errors import ShapeError
from ...sae import SparseAutoencoder
from ...store import LayerSpec
from ..graph.codes import Codes
from ..graph.finders import check_feature_module, onehot
from ..graph.moments import CONSTANT_RTOL

#: Entries per block of the feature-by-feature decoder-encoder product (bounds its memory).
_BLOCK_ENTRIES = 1 << 22
FLOW_COLUMNS = (
    "source_module",
    "source_layer",
    "target_module",
    "target_layer",
    "coactivation",
    "weight_flow",
)


def module_layer_profile(
    unit_module: np.ndarray, unit_layer: np.ndarray, n_layers: int, *, n_modules: int | None = None
) -> np.ndarray:
    """``[n_modules, n_layers]``: the fraction of each module's units in each layer.

    ``profile[m, l] = #{u: module(u) = m, layer(u) = l} / #{u: module(u) = m}``; rows sum
    to 1 (0 for a module without units). Units with module -1 are ignored.
    """
    unit_module = np.asarray(unit_module, dtype=np.int64)
    unit_layer = np.asarray(unit_layer, dtype=np.int64)
    if unit_module.shape != unit_layer.shape:
        raise ShapeError(
            f"`unit_module` {unit_module.shape} and `unit_layer` {unit_layer.shape} must "
            "have one entry per unit each."
        )
    if unit_layer.size and (unit_layer.min() < 0 or unit_layer.max() >= n_layers):
        raise ValueError(
            f"`unit_layer` holds layer {int(unit_layer.max())}, outside 0..{n_layers - 1}."
        )
    if n_modules is None:
        n_modules = int(unit_module.max()) + 1 if unit_module.size else 0
    member = unit_module >= 0
    counts = np.zeros((n_modules, n_layers))
    np.add.at(counts, (unit_module[member], unit_layer[member]), 1.0)
    return _row_shares(counts)


def feature_layer_energy(
    W_dec: np.ndarray, layers: Sequence[LayerSpec], unit_std: np.ndarray
) -> np.ndarray:
    """``[d_sae, n_layers]``: each feature's standardised decoder energy in each layer,
    ``sum_{u in layer} (W_dec[f, u] / std_u)^2`` (units with std 0 count with std 1)."""
    W_dec = np.asarray(W_dec, dtype=np.float64)
    _check_layers(layers, W_dec.shape[1])
    std = np.asarray(unit_std, dtype=np.float64)
    if std.shape != (W_dec.shape[1],):
        raise ShapeError(f"`unit_std` has shape {std.shape}; expected ({W_dec.shape[1]},).")
    energy = (W_dec / np.where(std > 0, std, 1.0)[None, :]) ** 2
    return np.stack([energy[:, l.start : l.stop].sum(axis=1) for l in layers], axis=1)


def module_layer_mass(
    sae: SparseAutoencoder,
    feature_module: np.ndarray,
    layers: Sequence[LayerSpec],
    unit_std: np.ndarray,
    *,
    feature_weight: np.ndarray | None = None,
    n_modules: int | None = None,
) -> np.ndarray:
    """``[n_modules, n_layers]``: the share of each module's decoder energy in each layer.

    ``mass[m, l] = sum_{f in m} w_f E[f, l] / sum_{f in m} w_f sum_l' E[f, l']`` with
    ``E`` from :func:`feature_layer_energy` (decoder in standardised units, so a layer's
    scale cannot decide where a module lives) and ``w_f = feature_weight[f]`` (1 by
    default; ``codes.act_sq_sum / codes.n_rows``, i.e. ``E[f^2]``, gives the atlas's
    attribution). Rows sum to 1 (0 for a module without features). ``layers`` are column
    ranges of the SAE's input, e.g. ``codes.layers``.
    """
    W_dec = sae.W_dec.detach().double().cpu().numpy()
    feature_module = check_feature_module(feature_module, W_dec.shape[0])
    energy = feature_layer_energy(W_dec, layers, unit_std)
    if feature_weight is not None:
        energy = energy * np.asarray(feature_weight, dtype=np.float64)[:, None]
    if n_modules is None:
        n_modules = int(feature_module.max()) + 1 if feature_module.size else 0
    return _row_shares(onehot(feature_module, n_modules).T @ energy)


def layer_module_links(
    profile: np.ndarray, min_share: float = 0.1, layer_names: Sequence[str] | None = None
) -> list[list]:
    """The layers each module spans: layer ``l`` belongs to module ``m`` when
    ``profile[m, l] >= min_share`` (``profile`` from :func:`module_layer_profile` or
    :func:`module_layer_mass`, whose rows are shares summing to 1).

    Returns one list per module, in layer order: the names in ``layer_names`` when given,
    else the layer indices. A module without units or features spans no layer.
    """
    profile = np.asarray(profile, dtype=np.float64)
    if profile.ndim != 2:
        raise ShapeError(f"`profile` must be [n_modules, n_layers], got shape {profile.shape}.")
    if not 0 < min_share <= 1:
        raise ValueError(f"`min_share` must be in (0, 1], got {min_share}.")
    if layer_names is not None and len(layer_names) != profile.shape[1]:
        raise ShapeError(
            f"`layer_names` has {len(layer_names)} names for {profile.shape[1]} layers."
        )
    links = []
    for row in profile:
        spans = np.flatnonzero(row >= min_share).tolist()
        links.append([layer_names[l] for l in spans] if layer_names is not None else spans)
    return links


def module_flows(
    codes: Codes,
    unit_module: np.ndarray,
    unit_layer: np.ndarray,
    sae: SparseAutoencoder,
    feature_module: np.ndarray,
    *,
    min_share: float = 0.1,
    max_features_per_module: int = 256,
) -> pd.DataFrame:
    """Links between modules of consecutive layers, by co-activation and by SAE weights.

    Pairs: every module ``A`` in layer ``l`` and ``B`` in layer ``l + 1`` (``A = B``
    included), where "module in layer" is :func:`layer_module_links` with ``min_share``
    on the unit profile (``unit_module``, ``unit_layer`` with indices into
    ``codes.layers``).

    ``coactivation``: the Pearson correlation across code rows of ``a_{A,l}`` and
    ``a_{B,l+1}``, where a module's activity in a layer is computed from the codes alone
    (no pass over the store): ``a_{m,l}(r) = sum_{f in m} f_r s_{f,l}``, with
    ``s_{f,l} = E[f, l] / sum_l' E[f, l']`` the share of feature ``f``'s standardised
    decoder energy in layer ``l`` (:func:`feature_layer_energy`). NaN when either activity
    is constant.

    ``weight_flow`` (meaningful for a joint multi-layer SAE, whose encoder reads every
    layer): ``G_l[f, g] = sum_{u in layer l} W_dec[f, u] W_enc[u, g]`` is the change in
    feature ``g``'s pre-activation per unit of feature ``f``'s activation, carried by
    what ``f`` writes into layer ``l`` (invariant to rescaling units). Then::

        weight_flow(A, l -> B, l+1) = mean_{f in A, g in B, f != g} |G_l[f, g]|
                                      / mean_{f, g in any module, f != g} |G_l[f, g]|

    the typical gain from A's features to B's features through layer ``l``, relative to
    the typical gain between module features through that layer (1: ordinary, > 1:
    stronger). ``f = g`` is left out: a feature reading its own direction is not a
    flow. Modules with more than ``max_features_per_module`` features contribute their
    most active ones (by ``E[f^2]``), so the cost stays ``O((n_modules *
    max_features_per_module)^2 d_in)``.

    Returns a DataFrame with columns ``source_module``, ``source_layer``,
    ``target_module``, ``target_layer`` (layer names), ``coactivation``, ``weight_flow``.
    """
    layers = codes.layers
    n_layers = len(layers)
    W_dec = sae.W_dec.detach().double().cpu().numpy()
    W_enc = sae.W_enc.detach().double().cpu().numpy()
    feature_module = check_feature_module(feature_module, W_dec.shape[0])
    if W_dec.shape[0] != codes.d_sae:
        raise ShapeError(f"The SAE has {W_dec.shape[0]} features but the codes {codes.d_sae}.")
    if len(unit_module) != W_dec.shape[1]:
        raise ShapeError(
            f"`unit_module` has {len(unit_module)} units; the SAE reads {W_dec.shape[1]}."
        )
    if max_features_per_module < 1:
        raise ValueError(
            f"`max_features_per_module` must be at least 1, got {max_features_per_module}."
        )
    unit_module = np.asarray(unit_module, dtype=np.int64)
    n_modules = int(max(unit_module.max(initial=-1), feature_module.max(initial=-1))) + 1
    links = layer_module_links(
        module_layer_profile(unit_module, unit_layer, n_layers, n_modules=n_modules), min_share
    )
    pairs = [
        (a, l, b)
        for l in range(n_layers - 1)
        for a in range(n_modules)
        if l in links[a]
        for b in range(n_modules)
        if l + 1 in links[b]
    ]
    if not pairs:
        return pd.DataFrame({c: [] for c in FLOW_COLUMNS})
    energy = feature_layer_energy(W_dec, layers, codes.unit_std)
    corr = _layer_activity_correlation(codes, feature_module, energy, n_modules)
    chosen = _strongest_features(feature_module, codes.act_sq_sum, max_features_per_module)
    gains = {
        l: _weight_flow(W_dec, W_enc, layers[l], chosen, feature_module[chosen], n_modules)
        for l in sorted({l for _, l, _ in pairs})
    }
    return pd.DataFrame(
        {
            "source_module": [a for a, _, _ in pairs],
            "source_layer": [layers[l].name for _, l, _ in pairs],
            "target_module": [b for _, _, b in pairs],
            "target_layer": [layers[l + 1].name for _, l, _ in pairs],
            "coactivation": [corr[a * n_layers + l, b * n_layers + l + 1] for a, l, b in pairs],
            "weight_flow": [gains[l][a, b] for a, l, b in pairs],
        },
        columns=list(FLOW_COLUMNS),
    )


def _layer_activity_correlation(
    codes: Codes, feature_module: np.ndarray, energy: np.ndarray, n_modules: int
) -> np.ndarray:
    """``[n_modules * n_layers]^2`` correlation across rows of the activities ``a_{m,l}``
    (column ``m * n_layers + l``), from sparse sums: memory O(nnz + (n_modules n_layers)^2)."""
    n_layers = energy.shape[1]
    total = energy.sum(axis=1, keepdims=True)
    share = energy / np.where(total > 0, total, 1.0)
    member = np.flatnonzero(feature_module >= 0)
    cols = feature_module[member][:, None] * n_layers + np.arange(n_layers)[None, :]
    weights = sp.csr_matrix(
        (
            share[member].ravel(),
            (np.repeat(member, n_layers), cols.ravel()),
        ),
        shape=(codes.d_sae, n_modules * n_layers),
    )
    activity = (codes.matrix.astype(np.float64) @ weights).tocsr()
    n = max(codes.n_rows, 1)
    mean = np.asarray(activity.sum(axis=0)).ravel() / n
    second = np.asarray((activity.T @ activity).todense()) / n
    cov = second - np.outer(mean, mean)
    var = np.diag(cov)
    std = np.sqrt(np.maximum(var, 0.0))
    denom = np.outer(std, std)
    # An activity constant up to rounding (variance ~1e-16 of its second moment) has none.
    alive = var > CONSTANT_RTOL * np.diag(second)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(np.outer(alive, alive), cov / denom, np.nan)
    return np.clip(corr, -1.0, 1.0)


def _strongest_features(
    feature_module: np.ndarray, act_sq_sum: np.ndarray, limit: int
) -> np.ndarray:
    """Module features, at most ``limit`` per module (highest ``E[f^2]`` first), sorted."""
    member = np.flatnonzero(feature_module >= 0)
    order = member[np.lexsort((member, -np.asarray(act_sq_sum)[member]))]
    modules = feature_module[order]
    rank = np.zeros(len(order), dtype=np.int64)
    for m in np.unique(modules):
        here = modules == m
        rank[here] = np.arange(here.sum())
    return np.sort(order[rank < limit])


def _weight_flow(
    W_dec: np.ndarray,
    W_enc: np.ndarray,
    layer: LayerSpec,
    features: np.ndarray,
    modules: np.ndarray,
    n_modules: int,
) -> np.ndarray:
    """``[n_modules, n_modules]`` mean ``|G_l[f, g]|`` over ``f in A, g in B, f != g``, over
    its mean across all pairs of ``features``; NaN where a module has no such pair."""
    dec = W_dec[features, layer.start : layer.stop]
    enc = W_enc[layer.start : layer.stop, features]
    n = len(features)
    members = onehot(modules, n_modules)
    sums = np.zeros((n_modules, n_modules))
    step = max(1, _BLOCK_ENTRIES // max(n, 1))
    for a in range(0, n, step):
        b = min(a + step, n)
        gain = np.abs(dec[a:b] @ enc)
        gain[np.arange(b - a), np.arange(a, b)] = 0.0  # f == g
        sums += members[a:b].T @ (members.T @ gain.T).T  # onehot_A^T |G| onehot_B, by blocks
    size = np.asarray(members.sum(axis=0)).ravel()
    n_pairs = np.outer(size, size) - np.diag(size)
    overall = sums.sum() / max(n * n - n, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_pairs > 0, sums / n_pairs, np.nan)
        return mean / overall if overall > 0 else np.full_like(mean, np.nan)


def _row_shares(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    total = x.sum(axis=1, keepdims=True)
    return x / np.where(total > 0, total, 1.0)


def _check_layers(layers: Sequence[LayerSpec], d_in: int) -> None:
    if not layers:
        raise ValueError("`layers` is empty; pass the SAE's layers, e.g. `codes.layers`.")
    if layers[0].start != 0 or layers[-1].stop != d_in:
        raise ShapeError(
            f"`layers` cover columns {layers[0].start}..{layers[-1].stop} but the SAE reads "
            f"{d_in}; pass layers in the SAE's input columns (`codes.layers`)."
        )
