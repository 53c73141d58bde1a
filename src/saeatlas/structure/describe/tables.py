"""The Atlas's feature and module tables, as :func:`.mapping.map_structure` first builds
them (described, stability and ablation columns are added later by their steps)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...sae import SparseAutoencoder
from ..config import AtlasConfig
from ..graph.codes import Codes
from ..graph.finders import module_modularity
from ..inference.significance import NullTest, strictness

#: Features whose table columns are computed at once (bounds the ``[features, d_in]``
#: float64 temporaries: at 262,144 latents the whole decoder is 0.8 GB in float64).
TABLE_FEATURES = 1 << 14


def features_table(
    sae: SparseAutoencoder,
    codes: Codes,
    attr: np.ndarray,
    feature_module: np.ndarray,
    unit_layer: np.ndarray,
    cfg: AtlasConfig,
) -> pd.DataFrame:
    """``features.parquet``'s core columns: density, activation, the units each feature
    writes (decoder) and reads (encoder) most, its energy per layer and attribution.
    Every column is a function of its feature's own row, computed in blocks of
    :data:`TABLE_FEATURES` features."""
    n_fire = codes.n_fire
    d_sae = sae.cfg.d_sae
    parts = [
        _feature_columns(sae, codes, unit_layer, cfg, slice(s, s + TABLE_FEATURES))
        for s in range(0, d_sae, TABLE_FEATURES)
    ]
    cols = {k: [x for p in parts for x in p[k]] for k in parts[0]} if parts else {}
    return pd.DataFrame(
        {
            "feature": np.arange(d_sae),
            "module": feature_module.astype(np.int64),
            "density": n_fire / max(codes.n_rows, 1),
            "mean_activation": codes.act_sum / np.maximum(n_fire, 1),
            "max_unit_corr": np.concatenate([p["max_unit_corr"] for p in parts])
            if parts
            else np.zeros(0),
            **{k: v for k, v in cols.items() if k != "max_unit_corr"},
            "attribution": attr.sum(axis=1),
        }
    )


def _feature_columns(
    sae: SparseAutoencoder,
    codes: Codes,
    unit_layer: np.ndarray,
    cfg: AtlasConfig,
    block: slice,
) -> dict[str, list | np.ndarray]:
    """:func:`features_table`'s per-feature columns for the features of ``block``."""
    W = sae.W_dec.detach()[block].double().cpu().numpy()
    std = np.where(codes.unit_std > 0, codes.unit_std, 1.0)
    Wstd = W / std[None, :]
    k = min(cfg.top_units, W.shape[1])
    top = np.argsort(-np.abs(Wstd), axis=1)[:, :k]
    # Read weights: encoder columns; times std_u they weigh standardised units.
    R = sae.W_enc.detach()[:, block].double().cpu().numpy().T
    top_read = np.argsort(-np.abs(R * std[None, :]), axis=1)[:, :k]
    energy = Wstd**2
    n_layers = int(unit_layer.max()) + 1 if unit_layer.size else 0
    per_layer = np.stack([energy[:, unit_layer == i].sum(1) for i in range(n_layers)], axis=1)
    per_layer = per_layer / np.where(
        per_layer.sum(1, keepdims=True) > 0, per_layer.sum(1, keepdims=True), 1
    )
    corr = np.abs(codes.unit_correlation(block)).max(axis=1) if codes.n_rows else np.zeros(len(W))
    # a feature that never fires (or fires with one value) has no correlation: it was 0,
    # and atlas.json's share of features at most 0.3 counted the dead ones as uncorrelated
    n = max(codes.n_rows, 1)
    var = codes.act_sq_sum[block] / n - (codes.act_sum[block] / n) ** 2
    corr = np.where(var > 0, corr, np.nan)
    units, weights = _nonzero(top, np.take_along_axis(W, top, axis=1))
    read_units, read_weights = _nonzero(top_read, np.take_along_axis(R, top_read, axis=1))
    return {
        "max_unit_corr": corr,
        "top_units": units,
        "top_unit_weights": weights,
        "top_read_units": read_units,
        "top_read_weights": read_weights,
        "layer_mass": list(per_layer),
    }


def _nonzero(top: np.ndarray, weights: np.ndarray) -> tuple[list, list]:
    """Each feature's listed units and weights without those of weight 0: a feature whose
    decoder row is 0 (or has fewer nonzeros than ``top_units``) was listed as writing to
    units 0-4, and the report named it among those units' writers."""
    keep = weights != 0
    return (
        [t[k].astype(np.int64) for t, k in zip(top, keep)],
        [w[k] for w, k in zip(weights, keep)],
    )


def _padded(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    out[: min(n, x.size)] = x[:n]
    return out


def modules_table(
    n_modules: int,
    units,
    feature_module: np.ndarray,
    unit_layer: np.ndarray,
    layer_names: list[str],
    adjacency: sp.spmatrix,
    tests: list[NullTest],
    module_ok: np.ndarray,
    module_p: np.ndarray,
) -> pd.DataFrame:
    """``modules.parquet``'s core columns: sizes, layers spanned, modularity term and
    the significance figures per null."""
    q = np.zeros(n_modules)  # a module of units may have no features of its own
    if n_modules:
        terms = module_modularity(adjacency, feature_module)[:n_modules]
        q[: terms.size] = terms
    rows = []
    # a module without features of its own has no cohesion to test (NaN)
    zs = {t.name: _padded(t.module_z(), n_modules) for t in tests}
    ps = {t.name: _padded(t.module_p(), n_modules) for t in tests}
    for m in range(n_modules):
        members = units.module == m
        spans = sorted(set(unit_layer[members].tolist()))
        row = {
            "module": m,
            "n_units": int(members.sum()),
            "n_features": int((feature_module == m).sum()),
            "n_shared_units": int((members & units.shared).sum()),
            "layers": [layer_names[i] for i in spans],
            "modularity": float(q[m]),
            # the z of the strictest null (a null whose draws have no spread has none)
            "z": float(zs[max(zs, key=lambda k: strictness(ps[k][m], zs[k][m]))][m])
            if zs
            else float("nan"),
            "p": float(module_p[m]) if len(module_p) > m else float("nan"),
            "significant": bool(module_ok[m]) if len(module_ok) > m else False,
        }
        for name in zs:
            row[f"z_{name}"] = float(zs[name][m])
            row[f"p_{name}"] = float(ps[name][m])
        rows.append(row)
    columns = [
        "module",
        "n_units",
        "n_features",
        "n_shared_units",
        "layers",
        "modularity",
        "z",
        "p",
        "significant",
    ]
    return pd.DataFrame(rows, columns=columns if not rows else None)
