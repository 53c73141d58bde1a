"""What features and modules respond to: top-activating rows and label selectivity.

A module's *activity* on a row is the sum of its features' activations on that
row, ``a[r, m] = sum_{f: feature_module[f] = m} codes[r, f]``, i.e. the sparse
product ``codes @ onehot(feature_module)`` ``[n_rows, n_modules]``.

- :func:`top_examples`: the ``n_top`` rows on which each feature and each module
  is most active, with the store's row metadata (and, for token stores, the
  surrounding tokens). Works column by column on the CSC form of the codes, so
  memory grows with the number of nonzero codes, never with ``rows x d_sae``.
- :func:`selectivity`: mean activation per class of any row label, a tuning
  index per feature and module, and a label-permutation test per module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from ...errors import ShapeError
from ..graph.codes import Codes
from ..graph.finders import check_feature_module, onehot
from .label_null import permutation_null

#: Metadata columns that are never copied into the top-example table (they are its keys).
_KEY_COLUMNS = ("row",)


def module_activity(codes: Codes, feature_module: np.ndarray, n_modules: int | None = None):
    """``[n_rows, n_modules]`` CSR: each module's activity per row, the sum of its features'
    activations (``codes.matrix @ onehot(feature_module)``; ``feature_module`` -1 is no module)."""
    members = onehot(feature_module, n_modules, np.float32)
    return (codes.matrix @ members).tocsr()


def row_column(codes: Codes, row_meta: pa.Table | pd.DataFrame, column: str) -> np.ndarray:
    """``[n_rows]`` the values of ``row_meta[column]`` for the code rows (matched on ``row``),
    e.g. the labels to pass to :func:`selectivity`."""
    table = _as_table(row_meta)
    if column not in table.column_names:
        raise ValueError(f"The row metadata has no column {column!r}; it has {table.column_names}.")
    where = _meta_positions(table, codes.rows)
    return table.column(column).take(pa.array(where)).to_numpy(zero_copy_only=False)


def top_examples(
    codes: Codes,
    feature_module: np.ndarray,
    row_meta: pa.Table | pd.DataFrame,
    *,
    n_top: int = 10,
    context_size: int = 5,
) -> pd.DataFrame:
    """The ``n_top`` most active rows of every active feature and every module, as a long table.

    Args:
        codes: the SAE's codes.
        feature_module: ``[d_sae]`` module of each feature, -1 for none.
        row_meta: the store's row metadata (``ActivationStore.rows()``), with a ``row`` column.
        n_top: rows kept per feature and per module (fewer where an item is active on fewer).
        context_size: tokens kept on each side of the row's token in ``context``.

    Returns:
        One row per (item, rank): ``kind`` (``'feature'`` or ``'module'``), ``id`` (feature or
        module index), ``rank`` (1 = most active; ties go to the lower store row), ``row``
        (store row id), ``activation``, then every other column of ``row_meta`` (``sample``,
        ``position``, ``label``, ``text``, ``token``...), and when there is a ``token``
        column, ``context``: the tokens of the same sample at positions ``position -
        context_size`` to ``position + context_size``, joined by spaces, with the row's own
        token written ``[[tok]]``. Features are listed first, both kinds in ``id`` order.
    """
    if n_top < 1:
        raise ValueError(f"`n_top` must be at least 1, got {n_top}.")
    if context_size < 0:
        raise ValueError(f"`context_size` must be >= 0, got {context_size}.")
    feature_module = check_feature_module(feature_module, codes.d_sae)
    table = _as_table(row_meta)
    parts = [("feature", _top_per_column(codes.matrix.tocsc(), n_top))]
    if (feature_module >= 0).any():
        parts.append(("module", _top_per_column(module_activity(codes, feature_module), n_top)))
    kind = np.concatenate([np.full(len(p[0]), k, dtype=object) for k, p in parts])
    item, rank, code_row, value = (np.concatenate([p[i] for _, p in parts]) for i in range(4))
    out = pd.DataFrame(
        {
            "kind": kind,
            "id": item.astype(np.int64),
            "rank": rank.astype(np.int64),
            "row": codes.rows[code_row].astype(np.int64),
            "activation": value.astype(np.float64),
        }
    )
    meta_cols = [
        c for c in table.column_names if c not in _KEY_COLUMNS and not c.startswith("__index")
    ]
    where = _meta_positions(table, codes.rows[code_row]) if len(out) else np.zeros(0, np.int64)
    if meta_cols:
        # Take the few rows needed before converting: the full table may hold a text per row.
        picked = table.select(meta_cols).take(pa.array(where)).to_pandas(ignore_metadata=True)
        out = pd.concat([out, picked.set_axis(out.index)], axis=1)
    if "token" in table.column_names:
        out["context"] = token_contexts(table, where, context_size)
    return out


def token_contexts(table: pa.Table, where: np.ndarray, context_size: int = 5) -> list[str]:
    """For each row position ``where`` of ``table`` (with ``sample``, ``position``, ``token``),
    the tokens of the same sample at ``position - context_size .. position + context_size``
    joined by spaces, the row's own token written ``[[tok]]``. Missing positions are skipped."""
    missing = [c for c in ("sample", "position", "token") if c not in table.column_names]
    if missing:
        raise ValueError(f"Token contexts need the row metadata columns {missing}.")
    where = np.asarray(where, dtype=np.int64)
    if where.size == 0:
        return []
    sample = table.column("sample").to_numpy().astype(np.int64)
    position = table.column("position").to_numpy().astype(np.int64)
    # One int64 key per (sample, position), sorted, so each neighbour is one searchsorted.
    lo = int(position.min())
    span = int(position.max()) - lo + 1 + 2 * context_size
    key = (sample - sample.min()) * span + (position - lo + context_size)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    offsets = np.arange(-context_size, context_size + 1)
    want = key[where][:, None] + offsets[None, :]  # [n, 2 * context_size + 1]
    hit = np.minimum(np.searchsorted(sorted_key, want), len(sorted_key) - 1)
    found = sorted_key[hit] == want
    source = np.where(found, order[hit], 0)
    tokens = table.column("token").take(pa.array(source.ravel())).to_pylist()
    width = len(offsets)
    out = []
    for i in range(len(where)):
        words = []
        for j in range(width):
            if not found[i, j]:
                continue
            tok = tokens[i * width + j]
            tok = "" if tok is None else str(tok)
            words.append(f"[[{tok}]]" if offsets[j] == 0 else tok)
        out.append(" ".join(words))
    return out


@dataclass(frozen=True)
class Selectivity:
    """Tuning of features and modules to the classes of one row label.

    ``*_preferred`` are positions in ``classes`` (``classes[module_preferred[m]]`` is the
    label), -1 for items never active; ``*_index`` is NaN for those.
    """

    classes: np.ndarray
    """``[n_classes]`` the label values, in column order."""
    class_counts: np.ndarray
    """``[n_classes]`` rows per class."""
    feature_means: np.ndarray
    """``[d_sae, n_classes]`` mean activation of each feature over the rows of each class."""
    module_means: np.ndarray
    """``[n_modules, n_classes]`` mean activity of each module over the rows of each class."""
    feature_index: np.ndarray
    """``[d_sae]`` selectivity index in [0, 1] (NaN: never active)."""
    feature_preferred: np.ndarray
    """``[d_sae]`` position in ``classes`` of the class with the highest mean (-1: never active)."""
    module_index: np.ndarray
    """``[n_modules]`` selectivity index in [0, 1] (NaN: never active)."""
    module_preferred: np.ndarray
    """``[n_modules]`` position in ``classes`` of the preferred class (-1: never active)."""
    module_p: np.ndarray
    """``[n_modules]`` label-permutation p-value of ``module_index`` (NaN: never active)."""
    n_perm: int
    """Label permutations behind ``module_p``."""

    def to_frame(self) -> pd.DataFrame:
        """One row per feature and module: ``kind``, ``id``, ``index``, ``preferred_class``
        (the label value, None when never active) and ``p`` (modules only)."""
        parts = []
        for kind, index, pref, p in (
            ("feature", self.feature_index, self.feature_preferred, None),
            ("module", self.module_index, self.module_preferred, self.module_p),
        ):
            labels = [self.classes[i] if i >= 0 else None for i in pref]
            parts.append(
                pd.DataFrame(
                    {
                        "kind": kind,
                        "id": np.arange(len(index)),
                        "index": index,
                        "preferred_class": pd.Series(labels, dtype=object),
                        "p": np.full(len(index), np.nan) if p is None else p,
                    }
                )
            )
        return pd.concat(parts, ignore_index=True)


def selectivity_index(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Selectivity index and preferred class of class means ``[n_items, n_classes]``.

    ``SI = (r_max - r_other) / (r_max + r_other)`` with ``r_max`` the highest class mean
    and ``r_other`` the mean of the other class means (the tuning index of sensory
    neuroscience, e.g. Moody, Wise, di Pellegrino & Zipser 1998). For non-negative
    activations it lies in [0, 1]: 0 for no preference, 1 when only one class drives
    the item. Returns ``(index [n_items], preferred [n_items])``; items whose means are
    all zero get NaN and -1.
    """
    n_classes = means.shape[1]
    if n_classes < 2:
        raise ValueError(f"A selectivity index needs at least 2 classes, got {n_classes}.")
    preferred = means.argmax(axis=1)
    top = np.take_along_axis(means, preferred[:, None], axis=1)[:, 0]
    others = (means.sum(axis=1) - top) / (n_classes - 1)
    denom = top + others
    with np.errstate(invalid="ignore", divide="ignore"):
        index = np.where(denom > 0, (top - others) / denom, np.nan)
    return index, np.where(denom > 0, preferred, -1)


def selectivity(
    codes: Codes,
    feature_module: np.ndarray,
    labels: Sequence | np.ndarray,
    *,
    classes: Sequence | np.ndarray | None = None,
    n_perm: int = 100,
    random_state: int | None = None,
) -> Selectivity:
    """Class tuning of every feature and module for one row label, with a permutation test.

    Args:
        codes: the SAE's codes.
        feature_module: ``[d_sae]`` module of each feature, -1 for none.
        labels: ``[n_rows]`` the class of each code row (ids or strings; None/NaN rows are
            left out). :func:`row_column` reads one from the store's row metadata.
        classes: the classes to compare, in this order; rows of other classes are left
            out. By default every label present, sorted.
        n_perm: label permutations for ``module_p`` (0 skips the test).
        random_state: seed of the permutations.

    Class means are ``codes.T @ onehot(labels) / counts``. The null permutes the labels
    (:func:`.label_null.permutation_null`: across samples where each sample has one, so
    the tokens of a text keep theirs together, else across rows) and recomputes each
    module's index; ``p = (1 + #{null >= observed}) / (1 + n_perm)``.
    """
    feature_module = check_feature_module(feature_module, codes.d_sae)
    if n_perm < 0:
        raise ValueError(f"`n_perm` must be >= 0, got {n_perm}.")
    y, classes = _encode_labels(labels, classes, codes.n_rows)
    keep = y >= 0
    y = y[keep]
    n_classes = len(classes)
    counts = np.bincount(y, minlength=n_classes)
    if (counts == 0).any():
        raise ValueError(
            f"The classes {list(classes[counts == 0])} have no rows; drop them from `classes`."
        )
    matrix = codes.matrix[np.flatnonzero(keep)] if not keep.all() else codes.matrix
    onehot_y = onehot(y, n_classes, np.float64)  # sums over many rows
    feature_sums = np.asarray((matrix.T @ onehot_y).todense(), dtype=np.float64)
    feature_means = feature_sums / counts[None, :]
    onehot_m = onehot(feature_module, dtype=np.float32)
    # A module's activity is a sum of feature activations, so its class sums are too.
    module_means = np.asarray(onehot_m.T @ feature_sums) / counts[None, :]
    f_index, f_pref = selectivity_index(feature_means)
    m_index, m_pref = selectivity_index(module_means)
    module_p = np.full(len(m_index), np.nan)
    if n_perm and len(m_index):
        activity = (matrix @ onehot_m).tocsc()
        groups = codes.samples[keep] if len(codes.samples) == len(keep) else None
        rng = np.random.default_rng(random_state)
        null = permutation_null(activity, y, n_classes, groups, n_perm, rng)
        with np.errstate(invalid="ignore"):
            exceed = (null >= m_index[None, :] - 1e-12).sum(axis=0)
        module_p = np.where(np.isnan(m_index), np.nan, (1 + exceed) / (1 + n_perm))
    return Selectivity(
        classes=classes,
        class_counts=counts,
        feature_means=feature_means,
        module_means=module_means,
        feature_index=f_index,
        feature_preferred=f_pref,
        module_index=m_index,
        module_preferred=m_pref,
        module_p=module_p,
        n_perm=int(n_perm),
    )


def _top_per_column(
    csc: sp.csc_matrix | sp.csr_matrix, n_top: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``n_top`` largest stored values of each column: ``(column, rank, row, value)``,
    ranks from 1, ties broken by the lower row (argpartition per column, O(nnz))."""
    csc = sp.csc_matrix(csc)
    indptr, indices, data = csc.indptr, csc.indices, csc.data
    cols, ranks, rows, values = [], [], [], []
    for j in np.flatnonzero(np.diff(indptr)):
        a, b = indptr[j], indptr[j + 1]
        v, r = data[a:b], indices[a:b]
        if b - a > n_top:
            # Everything tied with the n-th value competes, so ties resolve by row.
            cut = -np.partition(-v, n_top - 1)[n_top - 1]
            sel = np.flatnonzero(v >= cut)
            v, r = v[sel], r[sel]
        order = np.lexsort((r, -v))[:n_top]
        cols.append(np.full(len(order), j))
        ranks.append(np.arange(1, len(order) + 1))
        rows.append(r[order])
        values.append(v[order])
    if not cols:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, np.zeros(0, np.float32)
    return tuple(np.concatenate(x) for x in (cols, ranks, rows, values))


def _encode_labels(
    labels: Sequence | np.ndarray, classes: Sequence | np.ndarray | None, n_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Class position of each row (-1: missing or not among ``classes``) and the classes."""
    labels = np.asarray(labels)
    if labels.shape != (n_rows,):
        raise ShapeError(
            f"`labels` has shape {labels.shape}; expected ({n_rows},), one per code row. "
            "Use `row_column(codes, store.rows(), 'label')` to align store labels."
        )
    missing = np.asarray(pd.isna(labels), dtype=bool)
    if classes is None:
        classes = np.unique(labels[~missing])
    classes = np.asarray(classes)
    if len(classes) < 2:
        raise ValueError(f"Selectivity needs at least 2 classes; the labels have {list(classes)}.")
    y = np.asarray(pd.Index(classes).get_indexer(labels), dtype=np.int64)
    y[missing] = -1
    return y, classes


def _as_table(row_meta: pa.Table | pd.DataFrame) -> pa.Table:
    if isinstance(row_meta, pd.DataFrame):
        return pa.Table.from_pandas(row_meta, preserve_index=False)
    if isinstance(row_meta, pa.Table):
        return row_meta
    raise TypeError(
        f"`row_meta` must be a pyarrow Table or pandas DataFrame (`store.rows()`), "
        f"got {type(row_meta).__name__}."
    )


def _meta_positions(table: pa.Table, store_rows: np.ndarray) -> np.ndarray:
    """Position in ``table`` of each store row id (matched on its ``row`` column)."""
    if "row" not in table.column_names:
        raise ValueError(
            f"The row metadata needs a `row` column (store row ids); it has {table.column_names}."
        )
    meta_rows = table.column("row").to_numpy().astype(np.int64)
    order = np.argsort(meta_rows, kind="stable")
    store_rows = np.asarray(store_rows, dtype=np.int64)
    hit = np.minimum(np.searchsorted(meta_rows[order], store_rows), max(len(order) - 1, 0))
    if len(order) == 0 or (meta_rows[order][hit] != store_rows).any():
        absent = store_rows[meta_rows[order][hit] != store_rows] if len(order) else store_rows
        raise ShapeError(
            f"The row metadata lacks store rows {absent[:5].tolist()}; pass the rows table "
            "of the store the codes were encoded from."
        )
    return order[hit]
