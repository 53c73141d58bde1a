"""The ``Atlas``: the map ``analyze`` produces, and its directory.

An Atlas directory holds ``atlas.json`` (summary, significance, parameters,
versions), ``units.parquet``, ``features.parquet`` and ``modules.parquet``; the
column names are fixed (other tools read them) and documented in the README.
The directory is written beside its place and renamed into it, so it is
always complete. Its format, and the checks of an atlas read back, are
:mod:`.atlas_format`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._validation import check_flag_argument, check_path_argument, unique_keys
from ..errors import ConfigError
from ..store.atomic import (
    atomic_write,
    atomic_write_json,
    check_output_dir,
    finish_swap_for_reader,
    json_text,
    recover_dir,
    replacing_dir,
    resolve,
)
from ..store.lock import output_lock
from ..store.sources import dir_identity
from .atlas_format import (
    ATLAS_JSON,
    FORMAT_VERSION,
    OPTIONAL_TABLES,
    TABLES,
    AtlasFileError,
    check_summary,
    is_report_entry,
)
from .atlas_tables import check_tables


def _atlas_file(p: Path) -> bool:
    """Whether ``p`` is an entry an atlas (or its report) writes."""
    tables = {f"{t}.parquet" for t in TABLES + OPTIONAL_TABLES}
    return p.name in tables | {ATLAS_JSON} or is_report_entry(p)


def check_atlas_out(path: Path, overwrite: bool) -> None:
    """Refuse to write an atlas at ``path`` where that would lose something (a file, a
    folder of other files, an atlas without ``overwrite``); :meth:`Atlas.save` checks
    this, and ``analyze`` before its work. A directory an older saeatlas left
    half-written (only atlas files) is not refused."""
    recover_dir(path)
    check_output_dir(path, "an atlas", "an atlas's", ATLAS_JSON, _atlas_file, overwrite)


def check_atlas_argument(atlas: Any, then: str = "") -> None:
    """Refuse anything but an Atlas where one is read (its directory ended in an
    AttributeError); ``then``: what to do with it once loaded."""
    if not all(hasattr(atlas, a) for a in ("summary", "units", "modules")):
        raise ConfigError(
            f"`atlas` must be an Atlas, got {type(atlas).__name__}: read a saved one with "
            f"Atlas.load(DIR){then}."
        )


def _parse_summary(text: str) -> Any:
    """atlas.json's content, read as saeatlas writes it: a number that is undefined
    (``NaN``, ``Infinity``, or beyond float range, as ``1e400``) is None (older atlases
    wrote ``NaN``, and an edited ``-Infinity`` p-value was shown as one); text that is no
    Unicode (a lone surrogate, ``"\\ud800"``, which no page can hold) raises
    ``UnicodeEncodeError``, a ``ValueError``, and so does a key given twice in one object
    (JSON parsers keep the last or the first, so two tools would read two atlases)."""
    obj = json.loads(
        text,
        parse_constant=lambda _: None,
        parse_float=_finite_float,
        object_pairs_hook=lambda pairs: unique_keys(pairs, ATLAS_JSON),
    )
    json.dumps(obj, ensure_ascii=False).encode()
    return obj


def _finite_float(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _read_table(file: Path) -> pd.DataFrame:
    """``file`` as a table of its columns, its rows numbered 0, 1, ...: a table pandas
    saved with its index (``to_parquet()`` without ``index=False``, after its rows were
    edited) was read back with that index, which the report takes for unit numbers (a
    module card listed another layer's units under its layer, or ended in an IndexError);
    an index with a name is one of its columns again. A column named twice (pyarrow's
    "Multiple matches for FieldRef", with the whole schema) is named."""
    names = pq.read_schema(file).names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{file.name} has the columns {twice} more than once; keep one of each")
    frame = pq.read_table(file).to_pandas()
    named = [n for n in frame.index.names if n is not None and n not in frame.columns]
    return (frame.reset_index(named) if named else frame).reset_index(drop=True)


def atlas_path(path: Any) -> Path:
    """``path`` as the path of an atlas directory, or an error naming what it is instead:
    an ``Atlas`` object given to ``write_report`` or ``export_neuronpedia`` (which read
    the directory it was saved to) ended in pathlib's "expected str, bytes or
    os.PathLike object", and the atlas's ``atlas.json`` was called an atlas without one."""
    if isinstance(path, Atlas):
        raise AtlasFileError(
            "Got an Atlas object where the path of its directory goes: save it first "
            "(atlas.save(DIR)) and give DIR."
        )
    if not isinstance(path, (str, os.PathLike)):
        raise AtlasFileError(
            f"The atlas must be given as the path of its directory, got {type(path).__name__}."
        )
    path = Path(path)
    # an analysis killed while it swapped its atlas in left it complete beside `path`:
    # put in place, as readers of stores and SAEs do (the report called the path "not a
    # directory", an export and `Atlas.load` "not a complete atlas ... run analyze")
    finish_swap_for_reader(path, complete=ATLAS_JSON)
    resolve(path)  # a loop of symbolic links: an OSError, "not a directory", a disk error
    if path.is_file():
        raise AtlasFileError(
            f"'{path}' is not a directory; give the atlas directory that `saeatlas analyze "
            "--out` wrote."
        )
    if not path.exists():  # a mistyped path was sent to make an atlas there
        raise AtlasFileError(
            f"'{path}' does not exist; give the atlas directory that `saeatlas analyze --out` "
            "wrote."
        )
    return path


#: What to do about an atlas edited in Python whose tables disagree.
_EDITED = (
    "an atlas changed after the analysis must keep its tables and atlas.json in step "
    "(Atlas.load refuses it otherwise); save the atlas the analysis returned, or fix the tables"
)


@dataclass
class Atlas:
    """Modules of units, the feature communities behind them, and how sure we are."""

    units: pd.DataFrame
    """One row per unit: ``unit``, ``layer``, ``index``, ``module`` (-1 none),
    ``membership`` (0-1), ``shared``, ``cross_check_module``."""
    features: pd.DataFrame
    """One row per SAE feature: ``feature``, ``module``, ``density``,
    ``mean_activation``, ``max_unit_corr``, ``top_units``, ``top_unit_weights``
    (decoder: what it writes), ``top_read_units``, ``top_read_weights`` (encoder:
    what it reads), ``layer_mass`` (share of the feature's write energy per layer)."""
    modules: pd.DataFrame
    """One row per module: ``module``, ``n_units``, ``n_features``, ``layers``,
    ``modularity``, ``z``, ``p``, ``significant`` (+ ``z_<null>`` / ``p_<null>``)."""
    summary: dict[str, Any]
    """What ``atlas.json`` holds: counts, modularity and its nulls, parameters."""
    examples: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Top-activating rows of every feature and module: ``kind``, ``id``, ``rank``,
    ``row``, ``activation`` and the store's row metadata (``context`` for tokens)."""
    flows: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Links between modules of consecutive layers (co-activation, weight flow)."""
    ablation: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Module x label loss increases when the model was given (see
    :func:`.ablation.ablate_atlas`): ``module``, ``label``, ``effect``,
    ``random_effect``, ``specialisation``."""

    @property
    def n_modules(self) -> int:
        return int(self.summary.get("n_modules", len(self.modules)))

    @property
    def n_significant_modules(self) -> int:
        return int(self.summary.get("n_significant_modules", 0))

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the Atlas directory (refuses to replace one unless ``overwrite``).

        The directory is filled beside ``path`` and renamed into place holding
        ``path``'s lock (:func:`~saeatlas.store.atomic.replacing_dir`), so ``path`` is
        always the complete old atlas or the complete new one. A directory that an
        older saeatlas left half-written (only atlas files, no ``atlas.json``) is
        replaced. An atlas whose tables disagree (edited in Python: a module dropped from
        ``modules`` but still named by its units) is refused before anything is written:
        it was saved, over an atlas with ``overwrite``, and then refused by every reader.
        """
        check_path_argument("path", path)
        check_flag_argument("overwrite", overwrite)
        path = Path(path)
        # everything is checked, and turned into what is written, before the directory is
        # touched: a wrong type ended in an AttributeError or a pyarrow or JSON TypeError
        summary = self._checked_summary(path)
        tables = {
            name: self._arrow_table(name, path)
            for name in TABLES + OPTIONAL_TABLES
            if name in TABLES or not getattr(self, name).empty
        }
        check_tables(self, path, _EDITED)
        with output_lock(path):
            check_atlas_out(path, overwrite)
            with replacing_dir(path) as new:
                for name, table in tables.items():
                    atomic_write(
                        new / f"{name}.parquet", lambda tmp, t=table: pq.write_table(t, tmp)
                    )
                atomic_write_json(new / ATLAS_JSON, summary)
        return path

    def _checked_summary(self, path: Path) -> dict[str, Any]:
        """What ``atlas.json`` holds, once :meth:`load` would read it back."""
        if not isinstance(self.summary, dict):
            raise AtlasFileError(
                f"The atlas's `summary` must be a dict, got {type(self.summary).__name__}; "
                f"{_EDITED}."
            )
        summary = {"format_version": FORMAT_VERSION, **self.summary}
        try:
            check_summary(_parse_summary(json_text(summary)), path / ATLAS_JSON)
        except (TypeError, ValueError) as e:  # a set, an object; a lone surrogate
            raise AtlasFileError(
                f"The atlas's `summary` cannot be written as {ATLAS_JSON} ({e}): give it "
                f"numbers, text, lists and dicts; {_EDITED}."
            ) from None
        return summary

    def _arrow_table(self, name: str, path: Path) -> pa.Table:
        """The table ``name`` as written to ``name.parquet``."""
        frame = getattr(self, name)
        if not isinstance(frame, pd.DataFrame):
            raise AtlasFileError(
                f"The atlas's `{name}` must be a pandas DataFrame, got {type(frame).__name__}; "
                f"{_EDITED}."
            )
        try:
            return pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as e:  # a column of mixed kinds
            raise AtlasFileError(
                f"The atlas's `{name}` cannot be written as {name}.parquet ({e}): give each "
                f"column values of one kind; {_EDITED}."
            ) from None

    @classmethod
    def load(cls, path: str | Path) -> Atlas:
        """Read an Atlas directory written by :meth:`save`."""
        path = atlas_path(path)
        identity = dir_identity(path)  # an analysis's --overwrite swaps in another directory
        meta = path / ATLAS_JSON
        for file in [meta] + [path / f"{n}.parquet" for n in TABLES + OPTIONAL_TABLES]:
            resolve(file)  # a loop of symbolic links is named, not reported missing
        if not meta.exists():
            raise AtlasFileError(
                f"'{path}' is not a complete atlas (no {ATLAS_JSON}); run `saeatlas analyze` "
                "to make one."
            )
        # a folder is read by pyarrow as an empty dataset: an optional table was dropped
        # without a word, a required one named as lacking its columns
        folders = [
            p.name
            for p in [meta] + [path / f"{n}.parquet" for n in TABLES + OPTIONAL_TABLES]
            if p.is_dir()
        ]
        if folders:
            raise AtlasFileError(
                f"The atlas at '{path}' has folders where its files go ({', '.join(folders)}); "
                "move them away and rerun `saeatlas analyze` with --overwrite."
            )
        missing = [f"{name}.parquet" for name in TABLES if not (path / f"{name}.parquet").exists()]
        if missing:
            raise AtlasFileError(
                f"The atlas at '{path}' is missing {', '.join(missing)}; rerun `saeatlas "
                "analyze` with --overwrite to write it again."
            )
        try:
            summary = _parse_summary(meta.read_text())
            tables = {name: _read_table(path / f"{name}.parquet") for name in TABLES}
            for name in OPTIONAL_TABLES:
                if (path / f"{name}.parquet").exists():
                    tables[name] = _read_table(path / f"{name}.parquet")
        except (OSError, ValueError, RecursionError, pa.ArrowInvalid) as e:
            raise AtlasFileError(
                f"The atlas at '{path}' is unreadable ({e}); rerun analyze."
            ) from e
        if dir_identity(path) != identity:  # its files would mix two analyses
            raise AtlasFileError(
                f"The atlas at '{path}' was replaced (another `saeatlas analyze --overwrite`) "
                "while it was read; read it again once that analysis is done."
            )
        summary = check_summary(summary, meta)
        summary.pop("format_version", None)
        atlas = cls(summary=summary, **tables)
        check_tables(atlas, path)
        return atlas
