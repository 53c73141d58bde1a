"""Fingerprints of what an atlas was made from (its SAE and its store), and the check
that an SAE or store given later is that one (the ablation, the Neuronpedia export)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

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


#: Relative agreement of two :func:`store_moments` of one store's rows (its manifest's
#: running moments and a ``.npy`` copy's, scanned, differ in their last bits).
MOMENTS_RTOL = 1e-5


def store_moments(store: ActivationStore) -> list[float]:
    """Eight weighted sums of the store's per-unit |mean| and standard deviation (weights
    drawn once, positive: no sum cancels to a few last bits), which every row moves: the
    fingerprint's first 64 rows passed a store of as many rows that began alike (the same
    rows held five times, another capture whose first text was the same), whose rows the
    Neuronpedia export then read as the atlas's. Read from the moments the store keeps,
    not from its rows."""
    mean, std = np.abs(np.asarray(store.mean, np.float64)), np.asarray(store.std, np.float64)
    w = np.random.default_rng(0).uniform(0.5, 1.5, (4, mean.size))
    return [float(v) for v in np.concatenate([w @ mean, w @ std])]


def same_store(summary: dict[str, Any], store: ActivationStore) -> bool:
    """Whether ``store`` is the one an atlas (its ``summary``) was made from, by its
    ``store_fingerprint`` and ``store_moments`` (each where recorded)."""
    made = summary.get("store_fingerprint")
    if made is not None and made != store_fingerprint(store):
        return False
    recorded = summary.get("store_moments")  # not 8 numbers: not recorded (older atlases)
    if not isinstance(recorded, list) or len(recorded) != 8:
        return True
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in recorded):
        return True
    return bool(np.allclose(recorded, store_moments(store), rtol=MOMENTS_RTOL, atol=0.0))


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
    if not same_store(summary, store):
        raise ConfigError(
            f"The store '{store.path}' is not the one the atlas was made from "
            f"({summary.get('store')!r}): its rows differ. Give that store with --acts."
        )
