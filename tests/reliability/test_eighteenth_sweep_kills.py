"""The eighteenth hostile sweep: kills, concurrency and resume across every stage.

Readers whose output another command replaces while they read it, and kills at the
write steps of each stage, made deterministic: the other writer's swap is done from a
patched read step, a kill is an exception raised from a patched write step."""

from __future__ import annotations

import os
import shutil

import saeatlas.sae.io as sae_io


def test_sae_replaced_between_its_cfg_and_its_weights_is_refused(outputs, run_cli, tmp_path, monkeypatch):
    # `train --overwrite` swapped another SAE into the directory after `evaluate` had read
    # its cfg.json: the SAE read was one SAE's settings (k, layers, normalisation) over
    # the other's weights, without a word
    cli, assert_one_line_error = run_cli
    sae, other = tmp_path / "sae", tmp_path / "other"
    shutil.copytree(outputs.sae, sae)
    shutil.copytree(outputs.sae, other)
    real = sae_io.read_cfg

    def racing(path):
        read = real(path)
        os.rename(sae, tmp_path / ".sae.old")  # what swap_in does
        os.rename(other, sae)
        return read

    monkeypatch.setattr(sae_io, "read_cfg", racing)
    r = cli("evaluate", "--sae", sae, "--acts", outputs.store)
    monkeypatch.setattr(sae_io, "read_cfg", real)
    assert_one_line_error(r, f"The SAE at '{sae}' was replaced", "read it again")
    r = cli("evaluate", "--sae", sae, "--acts", outputs.store)  # once it is done, it reads
    assert r.exit_code == 0, r.output
