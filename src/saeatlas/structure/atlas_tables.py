"""The checks of an Atlas directory's tables against each other (:mod:`.atlas`; the
kinds of their columns are :mod:`.atlas_columns`): modules numbered ``0..n-1`` and named
by units and features, each unit once, layers in order, and ``atlas.json`'s verdict and
counts the ones the tables give. The files and ``atlas.json`'s own entries are
:mod:`.atlas_format`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .atlas_columns import check_columns, check_required
from .atlas_derived import check_derived
from .atlas_format import AtlasFileError
from .atlas_unit_modules import check_unit_modules
from .atlas_verdict import check_verdict

if TYPE_CHECKING:
    from .atlas import Atlas


def _unit_numbers(top: Any) -> np.ndarray:
    """One feature's ``top_units`` as integers; ``ValueError`` for anything else (floats
    were cast, and the report then indexed a list with them: a traceback)."""
    arr = np.asarray(top)
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"unit numbers of dtype {arr.dtype}")
    return arr.astype(np.int64).ravel()


#: What to do about an atlas directory whose files disagree.
REANALYSE = "rerun `saeatlas analyze` with --overwrite to write it again"


def check_tables(atlas: Atlas, path: Path, fix: str = REANALYSE) -> None:
    """Refuse an atlas whose files disagree (one edited by hand, or put together from two
    analyses): modules numbered ``0..n-1`` once each, units and features naming only
    those (or -1), each unit once, and ``atlas.json``'s verdict and counts the ones its
    tables give (:func:`.inference.outcome.decide`), so that no page or tool shows a
    headline that the tables below it contradict. ``fix``: what the error advises
    (:meth:`.Atlas.save` checks an atlas edited in Python before it writes it)."""
    check_columns(atlas, path, fix)
    modules, s = atlas.modules, atlas.summary
    n = len(modules)
    if n and "module" not in modules.columns:  # a KeyError traceback in the layers' check
        raise AtlasFileError(
            f"modules.parquet in '{path}' lists {n} modules without their `module` column; {fix}."
        )
    if n:
        ids = modules["module"]
        if not pd.api.types.is_integer_dtype(ids) or ids.tolist() != list(range(n)):
            raise AtlasFileError(
                f"modules.parquet in '{path}' numbers its {n} modules {ids.tolist()[:10]}, "
                f"not 0 to {n - 1} in order; {fix}."
            )
    units = atlas.units.get("unit")
    sae = s["sae"] if isinstance(s.get("sae"), dict) else {}
    for name, ids, size in (
        # the page gave an SAE of "d_in 99" above the 18 units it lists
        ("unit", units, sae.get("d_in")),
        ("feature", atlas.features.get("feature"), sae.get("d_sae")),
    ):
        # a feature listed twice, or past the SAE's latents, was drawn as one of the map's
        if ids is not None and (
            ids.tolist() != list(range(len(ids))) or size not in (None, len(ids))
        ):
            of = f" (the SAE's {size})" if size is not None else ""
            raise AtlasFileError(
                f"{name}s.parquet in '{path}' must list each {name}{of} once, numbered 0, 1, "
                f"2, ... in order; {fix}."
            )
    if {"layer", "index"} <= set(atlas.units.columns):
        _check_layers(atlas.units, s.get("layers"), path, fix)
    for name in ("units", "features", "ablation"):
        frame = getattr(atlas, name)
        if name != "ablation" and n and "module" not in frame.columns:
            # the export then took every feature for one of no module, without a word
            raise AtlasFileError(
                f"{name}.parquet in '{path}' has no `module` column, but modules.parquet "
                f"lists {n} modules; {fix}."
            )
        if "module" not in frame.columns or frame.empty:
            continue
        col = frame["module"]
        # not integers: every value is wrong, None too (a column of None passed, and the
        # Neuronpedia export ended in torch's TypeError on it)
        integers = pd.api.types.is_integer_dtype(col)
        bad = ~col.isin(range(-1, n)) if integers else pd.Series(True, index=col.index)
        if bad.any():
            raise AtlasFileError(
                f"{name}.parquet in '{path}' names the module {col[bad].tolist()[0]!r}, not "
                f"one of the {n} modules of modules.parquet (or -1, none); {fix}."
            )
        # a module's size is the count of its members (and of its members shared
        # with another module)
        sizes = [(f"n_{name}", col >= 0, "in the modules")]
        if name == "units" and "shared" in frame.columns:
            sizes.append(("n_shared_units", (col >= 0) & frame["shared"], "shared in them"))
        for size, counted, where in sizes if name != "ablation" else ():
            if size not in modules.columns or not n:
                continue
            counts = np.bincount(col[counted].to_numpy(np.int64), minlength=n)
            if modules[size].tolist() != counts.tolist():
                raise AtlasFileError(
                    f"`{size}` of modules.parquet in '{path}' is {modules[size].tolist()[:10]}, "
                    f"but {name}.parquet puts {counts.tolist()[:10]} {where}; {fix}."
                )
    check_required(atlas, path, fix)
    _check_spans(atlas, path, fix)
    check_unit_modules(atlas, path, fix)
    _check_references(atlas, path, fix)
    _check_flow_layers(atlas, path, fix)
    _check_unique_rows(atlas, path, fix)
    _check_list_lengths(atlas, path, fix)
    check_derived(atlas, path, fix)
    _check_ablation_q(modules, path, fix)
    for col in ("top_units", "top_read_units"):
        if units is not None and col in atlas.features.columns:
            try:
                named = np.concatenate(
                    [np.zeros(0, np.int64)] + [_unit_numbers(top) for top in atlas.features[col]]
                )
            except (TypeError, ValueError):
                named = np.full(1, -1)  # not lists of unit numbers
            if named.size and not 0 <= named.min() <= named.max() < len(units):
                raise AtlasFileError(
                    f"`{col}` of features.parquet in '{path}' must list units of units.parquet "
                    f"(0 to {len(units) - 1}); {fix}."
                )
    check_verdict(atlas, path, fix)


def _check_spans(atlas: Atlas, path: Path, fix: str) -> None:
    """``layers`` of modules.parquet: layers that hold units of the module, in the atlas's
    order (all of them, or after the profiles those with at least ``layer_span_share`` of
    its units): a module edited to span another layer was drawn and described so."""
    units, modules = atlas.units, atlas.modules
    # a modules.parquet of no rows may lack `module` (a KeyError here)
    if not {"layers", "module"} <= set(modules.columns) or not {"layer", "module"} <= set(
        units.columns
    ):
        return
    order = list(dict.fromkeys(units["layer"]))
    spans = {m: set(layers) for m, layers in units.groupby("module")["layer"]}
    for m, given in zip(modules["module"], modules["layers"]):
        held = [l for l in order if l in spans.get(m, ())]
        listed = None if given is None else [str(l) for l in given]
        if listed is None or listed != [l for l in held if l in listed]:
            raise AtlasFileError(
                f"`layers` of module {m} in modules.parquet in '{path}' is {listed}, but its "
                f"units in units.parquet lie in {held}; {fix}."
            )


def _check_references(atlas: Atlas, path: Path, fix: str) -> None:
    """``flows.parquet`` and ``examples.parquet`` name only modules of modules.parquet and
    features of features.parquet: a flow from a module that is not there ended the
    report in a traceback, and examples of one were listed under no module."""
    n = len(atlas.modules)
    refs = [("flows", col, None, n) for col in ("source_module", "target_module")]
    refs += [("examples", "id", "module", n), ("examples", "id", "feature", len(atlas.features))]
    ablated = atlas.summary.get("ablation")
    named = [(n, "preferred_label", "label_classes") for n in ("modules", "features")]
    # a row of a label the ablation did not split by was drawn in its module x label grid
    named.append(("ablation", "label", "ablation.classes"))
    for name, col, key in named:
        # a label the atlas was not profiled against was shown as the one preferred
        classes = (
            ablated.get("classes")
            if key.startswith("ablation.") and isinstance(ablated, dict)
            else atlas.summary.get(key)
        )
        frame = getattr(atlas, name)
        if not isinstance(classes, list) or col not in frame.columns:
            continue
        labels = frame[col].dropna()
        bad = labels[~labels.astype(str).isin([str(c) for c in classes])]
        if len(bad):
            raise AtlasFileError(
                f"`{col}` of {name}.parquet in '{path}' names {_plain(bad.iloc[0])!r}, not "
                f"one of atlas.json's `{key}` {classes[:10]}; {fix}."
            )
    for name, col, kind, size in refs:
        frame = getattr(atlas, name)
        if col not in frame.columns or frame.empty:
            continue
        ids = frame[col] if kind is None else frame.loc[frame["kind"] == kind, col]
        bad = ~ids.isin(range(size))
        if bad.any():
            what = kind or "module"
            raise AtlasFileError(
                f"`{col}` of {name}.parquet in '{path}' names the {what} "
                f"{ids[bad].tolist()[0]!r}, not one of the {size} {what}s of {what}s.parquet; "
                f"{fix}."
            )


def _check_flow_layers(atlas: Atlas, path: Path, fix: str) -> None:
    """A flow runs from a layer of the atlas to the next one (``atlas.json``'s order): a
    row of a layer pair the atlas does not have ('1' to '9') was averaged into the
    report's link between its modules, and counted among its layer pairs."""
    flows = atlas.flows
    if flows.empty or not {"source_layer", "target_layer"} <= set(flows.columns):
        return
    layers = atlas.summary.get("layers")
    if not isinstance(layers, list) and "layer" in atlas.units.columns:
        layers = list(dict.fromkeys(atlas.units["layer"]))
    if not isinstance(layers, list):
        return
    steps = set(zip(layers[:-1], layers[1:]))
    pairs = list(zip(flows["source_layer"], flows["target_layer"]))
    bad = [pair for pair in pairs if pair not in steps]
    if bad:
        raise AtlasFileError(
            f"flows.parquet in '{path}' holds a flow from layer {bad[0][0]!r} to {bad[0][1]!r}, "
            f"not from a layer of the atlas to the next one ({layers[:8]}); {fix}."
        )


#: The columns that name a row of each optional table: a second row of the same name
#: (joined or copied by hand) was averaged into the first by the report's module x label
#: grid and its module links, or listed twice among the top examples.
UNIQUE_ROWS = {
    "ablation": ("module", "label"),
    "flows": ("source_module", "source_layer", "target_module", "target_layer"),
    "examples": ("kind", "id", "rank"),
}


def _check_unique_rows(atlas: Atlas, path: Path, fix: str) -> None:
    """Each row of an optional table named once by :data:`UNIQUE_ROWS` (where it has
    those columns)."""
    for name, key in UNIQUE_ROWS.items():
        frame = getattr(atlas, name)
        if frame.empty or not set(key) <= set(frame.columns):
            continue
        twice = frame[list(key)].astype(str).duplicated()
        if twice.any():
            row = frame.loc[twice.idxmax(), list(key)]
            named = ", ".join(f"{k} {_plain(v)!r}" for k, v in row.items())
            raise AtlasFileError(
                f"{name}.parquet in '{path}' holds the row of {named} more than once; {fix}."
            )


def _check_ablation_q(modules: pd.DataFrame, path: Path, fix: str) -> None:
    """``ablation_q`` is ``ablation_p`` adjusted over the modules: the causal count reads
    it, so one edited by hand changed which modules were said to hurt the loss."""
    from .graph.hypergeom import benjamini_hochberg

    if not {"ablation_p", "ablation_q"} <= set(modules.columns):
        return
    want = benjamini_hochberg(modules["ablation_p"].to_numpy(float), skip_nan=True)
    got = modules["ablation_q"].to_numpy(float)
    if not np.allclose(got, want, rtol=1e-9, atol=0, equal_nan=True):
        raise AtlasFileError(
            f"`ablation_q` of modules.parquet in '{path}' is {got.round(4).tolist()[:10]}, "
            f"not its `ablation_p` adjusted over the modules ({want.round(4).tolist()[:10]}); "
            f"{fix}."
        )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _check_list_lengths(atlas: Atlas, path: Path, fix: str) -> None:
    """Lists of one number per layer, per label class or per listed unit have that many
    (a module's `layer_profile` of another length ended the report in a traceback, and a
    feature's weights were shown against other units)."""
    layers = atlas.summary.get("layers")
    if not isinstance(layers, list) and "layer" in atlas.units.columns:
        layers = list(dict.fromkeys(atlas.units["layer"]))
    classes = atlas.summary.get("label_classes")
    per = {
        "layer": len(layers) if isinstance(layers, list) else None,
        "label class": len(classes) if isinstance(classes, list) else None,
    }
    for name, col, of in (
        ("modules", "layer_profile", "layer"),
        ("modules", "layer_mass", "layer"),
        ("features", "layer_mass", "layer"),
        ("modules", "label_means", "label class"),
        ("features", "top_unit_weights", "top_units"),
        ("features", "top_read_weights", "top_read_units"),
    ):
        frame = getattr(atlas, name)
        if col not in frame.columns or frame.empty or (of in per and per[of] is None):
            continue
        if of in per:
            want = pd.Series(per[of], index=frame.index)
        elif of in frame.columns:
            want = frame[of].map(np.size)
        else:
            continue
        got = frame[col].map(np.size)
        if (got != want).any():
            i = (got != want).idxmax()
            raise AtlasFileError(
                f"`{col}` of {name}.parquet in '{path}' has {got[i]} numbers in row {i}, but "
                + (f"the atlas has {want[i]} {of}s" if of in per else f"`{of}` lists {want[i]}")
                + f"; {fix}."
            )


def _check_layers(units: pd.DataFrame, layers: list[str] | None, path: Path, fix: str) -> None:
    """Each layer's units numbered ``0, 1, ...`` in order within it, and (when
    ``atlas.json`` lists them) only layers the atlas read: a unit's ``layer`` and
    ``index`` are what the report and the search name it by (``act2:17``). The units
    run through the layers one after another in ``atlas.json``'s order: the ablation
    maps unit numbers to the store's columns by that order, and the layer profiles are
    drawn by it (with the order edited, both went to other layers without a word)."""
    column = units["layer"].to_numpy()
    runs = (
        [column[0]] + [b for a, b in zip(column[:-1], column[1:]) if a != b] if len(column) else []
    )
    order = list(dict.fromkeys(runs))
    if len(runs) != len(order) or (
        layers is not None
        and [l for l in order if l in layers] != [l for l in layers if l in order]
    ):  # a layer atlas.json lacks is named below
        raise AtlasFileError(
            f"units.parquet in '{path}' holds its layers in the order {[str(l) for l in runs][:8]}, "
            f"not one after another as atlas.json lists them ({layers}); {fix}."
        )
    empty = [l for l in layers or () if l not in order]
    if len(column) and empty:  # shown as a layer of 0 units, and drawn as one
        raise AtlasFileError(
            f"atlas.json in '{path}' lists the layer {empty[0]!r}, but no unit of units.parquet "
            f"lies in it; {fix}."
        )
    for layer, index in units.groupby("layer", sort=False)["index"]:
        if layers is not None and layer not in layers:
            raise AtlasFileError(
                f"units.parquet in '{path}' names the layer {layer!r}, not one of the atlas's "
                f"layers {layers}; {fix}."
            )
        if index.tolist() != list(range(len(index))):
            raise AtlasFileError(
                f"units.parquet in '{path}' numbers the units of layer {layer!r} "
                f"{index.tolist()[:5]}..., not 0, 1, 2, ... in order; {fix}."
            )
