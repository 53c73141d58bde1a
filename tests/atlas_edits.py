"""Hand edits of an atlas directory's files, for tests of what ``Atlas.load`` and
``saeatlas report`` make of them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def edit_summary(atlas: Path, **entries) -> None:
    """Set ``entries`` of the atlas's atlas.json."""
    meta = atlas / "atlas.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), **entries}))


def edit_table(atlas: Path, name: str, **columns) -> None:
    """Set ``columns`` of the atlas's ``name``.parquet."""
    table = atlas / f"{name}.parquet"
    pd.read_parquet(table).assign(**columns).to_parquet(table, index=False)
