"""What modules respond to and where they live: the atlas's descriptive columns and tables.

Called by :func:`~saeatlas.structure.map_structure` once the modules are
known; each quantity comes from :mod:`.profiles` or :mod:`.layers`, where its
definition lives.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...sae import SparseAutoencoder
from ...store import ActivationStore
from ..graph.codes import Codes
from .layers import layer_module_links, module_flows, module_layer_mass, module_layer_profile
from .profiles import row_column, selectivity, top_examples

log = logging.getLogger(__name__)

#: A layer belongs to a module's span when it holds at least this share of the module's units.
SPAN_SHARE = 0.1
#: Most label classes modules are profiled against: the class means are a dense
#: [d_sae, classes] array (a `token` column of 50k tokens and 32k latents: 13 GB).
MAX_LABEL_CLASSES = 1000


@dataclass(frozen=True)
class Description:
    module_columns: dict[str, list]
    """Extra columns of ``modules.parquet``, one list entry per module."""
    feature_columns: dict[str, np.ndarray]
    """Extra columns of ``features.parquet``."""
    examples: pd.DataFrame
    """Top rows of every feature and module (``examples.parquet``)."""
    flows: pd.DataFrame
    """Links between modules of consecutive layers (``flows.parquet``)."""
    summary: dict


def describe_modules(
    sae: SparseAutoencoder,
    store: ActivationStore,
    codes: Codes,
    feature_module: np.ndarray,
    unit_module: np.ndarray,
    unit_layer: np.ndarray,
    *,
    label_column: str,
    n_examples: int,
    seed: int,
) -> Description:
    """Layer profiles, layer x module mass, flows, top examples and label selectivity."""
    # a module of units may have no features of its own
    n_modules = int(max(feature_module.max(initial=-1), unit_module.max(initial=-1))) + 1
    names = [l.name for l in codes.layers]
    profile = module_layer_profile(unit_module, unit_layer, len(names), n_modules=n_modules)
    weight = codes.act_sq_sum / max(codes.n_rows, 1)
    mass = module_layer_mass(
        sae,
        feature_module,
        codes.layers,
        codes.unit_std,
        feature_weight=weight,
        n_modules=n_modules,
    )
    spans = layer_module_links(profile, SPAN_SHARE, layer_names=names)
    columns: dict[str, list] = {
        "layers": [list(s) for s in spans],
        "layer_profile": [list(map(float, p)) for p in profile],
        "layer_mass": [list(map(float, m)) for m in mass],
    }
    features: dict[str, np.ndarray] = {}
    meta = store.rows()
    summary: dict = {"layer_span_share": SPAN_SHARE}
    labels = row_column(codes, meta, label_column) if label_column in meta.column_names else None
    labelled = None if labels is None else labels[~pd.isna(labels)]
    n_classes = 0 if labelled is None else pd.unique(labelled).size
    # one class (or none) leaves nothing to select; a class per row or two (`sample`, a
    # text's tokens) is no label, and its class means would not fit in memory. Rows are
    # the labelled ones: 2 labelled rows among 300 were profiled as 2 classes of one row
    most = min(MAX_LABEL_CLASSES, (0 if labelled is None else labelled.size) // 2)
    if labels is not None and not 2 <= n_classes <= most:
        log.warning(
            "The label column %r has %d class(es) on the analysed rows, %d of them labelled; "
            "modules are not profiled against it (selectivity needs at least 2 classes and at "
            "most %d here (%d at most, and one per two labelled rows)).",
            label_column,
            n_classes,
            0 if labelled is None else labelled.size,
            most,
            MAX_LABEL_CLASSES,
        )
    elif labels is not None and n_modules:
        sel = selectivity(codes, feature_module, labels, random_state=seed)
        pref = [str(sel.classes[i]) if i >= 0 else None for i in np.asarray(sel.module_preferred)]
        # selectivity is measured on a module's features; a module without features of
        # its own (its units from the units' correlations) has none
        missing = n_modules - len(pref)
        columns["selectivity"] = [float(v) for v in sel.module_index] + [np.nan] * missing
        columns["preferred_label"] = pref + [None] * missing
        columns["selectivity_p"] = [float(v) for v in sel.module_p] + [np.nan] * missing
        columns["label_means"] = [list(map(float, r)) for r in sel.module_means] + [
            [np.nan] * len(sel.classes)
        ] * missing
        features["selectivity"] = np.asarray(sel.feature_index, dtype=float)
        features["preferred_label"] = np.array(
            [str(sel.classes[i]) if i >= 0 else None for i in sel.feature_preferred], dtype=object
        )
        summary["label_column"] = label_column
        summary["label_classes"] = [str(c) for c in sel.classes]
    examples = (
        top_examples(codes, feature_module, meta, n_top=n_examples)
        if n_examples
        else pd.DataFrame()
    )
    flows = (
        module_flows(codes, unit_module, unit_layer, sae, feature_module)
        if n_modules and len(names) > 1
        else pd.DataFrame()
    )
    return Description(columns, features, examples, flows, summary)
