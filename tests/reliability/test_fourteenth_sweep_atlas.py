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


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (BaseException, like KeyboardInterrupt)."""


def test_a_report_stopped_between_its_figures_and_its_page_leaves_no_mismatched_page(
    tmp_path, analysed, monkeypatch
):
    """The figures were swapped in, then the page rendered and written: a kill between left
    the old page beside another report's figures, and an error in rendering the page left
    it so too. The page is now rendered before the swap, and the old page leaves first."""
    import shutil

    import saeatlas.report.write as write

    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    page = tmp_path / "page.html"  # outside the atlas, which an --overwrite keeps
    write.write_report(atlas, page)
    old = page.read_bytes()
    figures = {p.name: p.stat().st_ino for p in (atlas / "figures").iterdir()}

    def broken(*args, **kwargs):
        raise ValueError("a template error")

    monkeypatch.setattr(write, "render_page", broken)
    with pytest.raises(ValueError, match="a template error"):
        write.write_report(atlas, page)
    assert page.read_bytes() == old  # nothing changed: figures and page are the old ones
    assert {p.name: p.stat().st_ino for p in (atlas / "figures").iterdir()} == figures
    monkeypatch.undo()

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(write, "atomic_write_bytes", killed)
    with pytest.raises(Killed):
        write.write_report(atlas, page)
    new = {p.name: p.stat().st_ino for p in (atlas / "figures").iterdir()}
    assert new.keys() == figures.keys() and new != figures  # the new report's figures
    assert not page.exists()  # and no page that lists them as the old report's
    monkeypatch.undo()
    write.write_report(atlas, page)  # the next report writes both
    assert page.is_file()
