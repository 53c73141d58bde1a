"""Whether the SAE that ``atlas.json`` names is still the one the atlas was made from.

The report reads the SAE's training curves (``metrics.jsonl``) and finds it in a sweep by
its path. An SAE trained again at that path since the analysis (another seed, another
store) would lend the page curves and a sweep point that are not the atlas's: the SAE
there is compared with the ``fingerprint`` atlas.json records first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import AtlasError, ConfigError
from ..sae import SparseAutoencoder
from ..sae.model import sae_fingerprint
from ..store.atomic import resolve


def sae_recorded(summary: dict[str, Any]) -> dict[str, Any]:
    """The ``sae`` object of atlas.json (empty when absent)."""
    made = summary.get("sae")
    return made if isinstance(made, dict) else {}


def recorded_path(path: str | Path, base: Path) -> Path:
    """A path atlas.json records: as written, or relative to ``base`` when that is where
    it exists (older atlases recorded paths relative to where the analysis ran)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return base / p if (base / p).exists() else p


def not_there(what: str, path: Path, note: str = "") -> str:
    """Why ``what`` at ``path`` (``note`` after it), which does not exist, is not there (a
    clause): a loop of symbolic links was called "moved or deleted"."""
    try:
        resolve(path)
    except ConfigError:
        return f"{what} '{path}'{note} leads through a loop of symbolic links"
    return f"{what} '{path}'{note} is not there (moved or deleted)"


def sae_unread(summary: dict[str, Any], base: Path) -> str | None:
    """Why the SAE at the path atlas.json records (:func:`recorded_path` from ``base``) is
    not the atlas's (a clause: not there, unreadable, or its weights differ), or None when
    it is, or when atlas.json records no path or no fingerprint (an atlas from before the
    fingerprint)."""
    made = sae_recorded(summary)
    path, fingerprint = made.get("path"), made.get("fingerprint")
    if not path or not fingerprint:
        return None
    path = recorded_path(path, base)
    if not Path(path).is_dir():
        return not_there("the atlas's SAE", path)
    try:
        same = sae_fingerprint(SparseAutoencoder.load(path)) == fingerprint
    except (AtlasError, OSError, ValueError, KeyError, TypeError) as e:
        return f"the atlas's SAE '{path}' is unreadable ({e})"
    if not same:
        return (
            f"the SAE at '{path}' is not the one the atlas was made from (its weights "
            "differ: trained again since the analysis)"
        )
    return None
