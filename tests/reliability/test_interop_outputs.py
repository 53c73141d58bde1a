"""Where the imports and exports write (ninth sweep): a sparsify run's SAEs went into a
store, SAE or atlas given as --out, and the same run could not be imported again into
its own folder with --overwrite."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.mark.parametrize("kind", ["store", "sae", "atlas"])
def test_a_sparsify_run_is_not_imported_into_another_output(
    tmp_path, outputs, run_cli, snapshot, kind
):
    """`import-sparsify RUN --out STORE` wrote STORE/layers.0.mlp and STORE/layers.1
    beside the shards, and reported success."""
    cli, one_line = run_cli
    out = shutil.copytree(getattr(outputs, kind), tmp_path / kind)
    before = snapshot(tmp_path)
    what = {"sae": "the SAE", "store": "the activation store"}.get(kind, f"the {kind}")
    run = FIXTURES / "sparsify" / "run"
    one_line(cli("import-sparsify", run, "--out", out, "--overwrite"), f"is {what}", "--out")
    assert snapshot(tmp_path) == before


def test_a_sparsify_run_is_imported_again_into_its_folder(tmp_path, run_cli):
    """The second import, with --overwrite, was refused as writing a folder that holds
    SAEs (the nested-outputs rule); without it, it must ask for --overwrite."""
    cli, one_line = run_cli
    run = FIXTURES / "sparsify" / "run"
    first = cli("import-sparsify", run, "--out", tmp_path / "out")
    assert first.exit_code == 0, first.output
    one_line(cli("import-sparsify", run, "--out", tmp_path / "out"), "--overwrite")
    again = cli("import-sparsify", run, "--out", tmp_path / "out", "--overwrite")
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["layers.0.mlp", "layers.1"]
