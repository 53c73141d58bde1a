"""Fingerprints of what an atlas was made from (its SAE and its store), and the check
that an SAE or store given later is that one (the ablation, the Neuronpedia export)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..errors import ConfigError
from ..sae import SparseAutoencoder
from ..sae.model import sae_fingerprint
from ..store import ActivationStore


def store_fingerprint(store: ActivationStore) -> str:
    """A hash of ``store``'s rows count, layers and first 64 rows as float32 (two
    captures of other inputs or of another model differ in them; the same rows saved as
    a ``.npy`` do not, where running moments could differ in their last bits)."""
    layers = [(l.name, l.start, l.stop) for l in store.layers]
    head = json.dumps([store.n_rows, layers]).encode()
    return hashlib.sha256(head + store.read(0, 64).numpy().tobytes()).hexdigest()


def check_made_from(
    summary: dict[str, Any], sae: SparseAutoencoder | None, store: ActivationStore
) -> None:
    """Refuse an SAE or a store other than the ones an atlas (its ``atlas.json``,
    ``summary``) was made from, where it recorded them: of the same sizes, another SAE's
    latents (a seed SAE's) or another capture's rows would be read as the atlas's
    features and rows without a word (``sae`` None: the store alone, as the ablation
    reads the units' means from it)."""
    made = summary.get("sae") if isinstance(summary.get("sae"), dict) else {}
    if sae is not None and made.get("fingerprint") not in (None, sae_fingerprint(sae)):
        raise ConfigError(
            f"The SAE given is not the one the atlas was made from ({made.get('path')!r}): "
            "its weights differ. Give that SAE with --sae."
        )
    if summary.get("store_fingerprint") not in (None, store_fingerprint(store)):
        raise ConfigError(
            f"The store '{store.path}' is not the one the atlas was made from "
            f"({summary.get('store')!r}): its rows differ. Give that store with --acts."
        )
