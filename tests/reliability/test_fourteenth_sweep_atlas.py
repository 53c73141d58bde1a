"""The fourteenth hostile sweep's cases in analysis, atlas files, report, interop, export
and the Python API: each failed (a wrong result, a traceback or no word) before its fix."""

from __future__ import annotations

import pytest

from saeatlas.sae import SparseAutoencoder


def test_an_in_memory_saes_null_source_is_trained_on_its_own_rows(outputs):
    """From Python, an SAE given loaded (no folder) and analysed on other rows had the
    dictionary null's source trained on the analysed rows; the CLI's path (a folder)
    trains it on the SAE's own rows, and so does this one now."""
    from dataclasses import replace

    from saeatlas.errors import ConfigError
    from saeatlas.store import ActivationStore
    from saeatlas.structure.inference.seeds import null_source_sae
    from saeatlas.train.run import rows_digest

    sae = SparseAutoencoder.load(outputs.sae)
    mine = sae.cfg.metadata["rows_digest"]
    other = ActivationStore.open(outputs.npy)  # the same rows as a .npy: other rows
    assert rows_digest(other) != mine
    source, _ = null_source_sae(sae, None, other)
    assert source.cfg.metadata["rows_digest"] == mine
    gone = SparseAutoencoder(replace(sae.cfg, metadata={**sae.cfg.metadata, "store": "/nowhere"}))
    gone.load_state_dict(sae.state_dict())
    with pytest.raises(ConfigError, match=r"trained on other rows .*null_source="):
        null_source_sae(gone, None, other)
