"""Training settings of the eighth hostile sweep that were taken without a word."""

from __future__ import annotations

import os


def test_a_garbage_sparse_kernels_variable_is_one_line(tmp_path, outputs, run_cli, monkeypatch):
    """SAEATLAS_SPARSE_KERNELS=true was dropped without a word (only '0' and '1' are
    read), so the kernels were not the ones the user forced."""
    cli, one_line = run_cli
    monkeypatch.setenv("SAEATLAS_SPARSE_KERNELS", "true")
    args = ["train", "--acts", outputs.store, "--out", tmp_path / "sae", "--seeds", "1",
            "--d-sae", "24", "--k", "4", "--tokens", "256", "--batch-size", "64", "-q"]  # fmt: skip
    one_line(cli(*args), "SAEATLAS_SPARSE_KERNELS is 'true'", "'1'", "'0'")
    assert os.listdir(tmp_path) == []


def test_resume_does_not_keep_a_complete_sae_of_other_rows(tmp_path, outputs, run_cli):
    """`train --resume` kept a complete SAE trained with the same settings on another
    store ('Kept the complete topk SAE'), as if it had been trained on these rows."""
    import shutil

    cli, one_line = run_cli
    shutil.copytree(outputs.sae, tmp_path / "sae")
    args = ["train", "--out", tmp_path / "sae", "--d-sae", "24", "--k", "4", "--tokens",
            "2048", "--batch-size", "64", "--seeds", "1", "--resume", "-q"]  # fmt: skip
    assert "Kept the complete" in cli(*args, "--acts", outputs.store).output
    before = (tmp_path / "sae" / "sae_weights.safetensors").read_bytes()
    one_line(cli(*args, "--acts", outputs.npy), "trained on other rows", "--overwrite")
    assert (tmp_path / "sae" / "sae_weights.safetensors").read_bytes() == before
