"""The eleventh hostile sweep's cases in analysis, atlas files, report, interop and
export: each failed (a wrong result or a traceback) before its fix."""

from __future__ import annotations

from dataclasses import replace

import pytest

from saeatlas.errors import ConfigError
from saeatlas.sae import SparseAutoencoder


def test_a_sweep_member_trained_on_other_rows_is_refused(tmp_path, outputs):
    """The report hid such a sweep, but `analyze --sweep` compared its modules with the
    atlas's without a word."""
    from saeatlas.structure import AtlasConfig, analyze

    sae = SparseAutoencoder.load(outputs.sae)
    mine = sae.cfg.metadata["rows_digest"]
    meta = {**sae.cfg.metadata, "rows_digest": "0123456789abcdef"}
    SparseAutoencoder(replace(sae.cfg, metadata=meta)).save(tmp_path / "k-2")
    with pytest.raises(ConfigError, match=rf"member 2 .*rows digest 0123456789abcdef.*{mine}"):
        analyze(outputs.sae, outputs.store, AtlasConfig(), sweep=("k", [(2.0, tmp_path / "k-2")]))
