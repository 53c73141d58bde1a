"""Fourteenth hostile sweep, training and CLI half: a torchrun environment whose other
ranks never start, ..."""

from __future__ import annotations

import logging
import socket


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rank_whose_peers_never_start_says_so_and_stops(guarded, run_cli, monkeypatch, caplog):
    """WORLD_SIZE=2, RANK=0, MASTER_ADDR and MASTER_PORT set by hand with one process
    started waited torch's 30-minute rendezvous without a word; it now says what it waits
    for and stops after SAEATLAS_JOIN_TIMEOUT seconds with one line."""
    from saeatlas import _world

    cli, one_line_error = run_cli
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    env = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for k, v in {**env, "MASTER_PORT": str(_free_port()), "SAEATLAS_JOIN_TIMEOUT": "0.3"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(_world, "JOIN_NOTICE_S", 0.05)
    train = ["train", "--acts", guarded.store, "--out", guarded.root / "new-sae", "-q"]
    with caplog.at_level(logging.WARNING, logger="saeatlas._world"):
        one_line_error(cli(*train), "Rank 0 of 2 could not join", "within 0.3 s", "torchrun")
    assert "Rank 0 of 2 is waiting for the other ranks at 127.0.0.1:" in caplog.text
    assert not (guarded.root / "new-sae").exists()
    for bad in ("soon", "0", "nan", "1e400"):
        monkeypatch.setenv("SAEATLAS_JOIN_TIMEOUT", bad)
        one_line_error(cli(*train), f"SAEATLAS_JOIN_TIMEOUT is {bad!r}")


def test_autocast_that_changes_nothing_is_warned_of(tmp_path, guarded, run_cli, caplog):
    """`--autocast bf16` with topk trained the same SAE bit for bit as without it, on a CPU
    and on a GPU alike (its sparse kernels keep the weights' precision), without a word;
    batchtopk's dense products are cast, on a CPU too."""
    from safetensors.numpy import load_file

    cli, _ = run_cli
    base = ["train", "--acts", guarded.store, "--d-sae", "16", "--k", "2", "--tokens", "512"]
    base += ["--batch-size", "32", "--seeds", "1", "-q"]
    weights = {}
    for arch in ("topk", "batchtopk"):
        for autocast in ("none", "bf16"):
            out = tmp_path / f"{arch}-{autocast}"
            caplog.clear()
            with caplog.at_level("WARNING", logger="saeatlas.cli.sae"):
                r = cli(*base, "--architecture", arch, "--autocast", autocast, "--out", out)
            assert r.exit_code == 0, r.output
            warned = "`autocast` is read only with architecture" in caplog.text
            assert warned == (arch == "topk"), (arch, caplog.text)
            weights[arch, autocast] = load_file(out / "sae_weights.safetensors")["W_enc"]
    assert (weights["topk", "none"] == weights["topk", "bf16"]).all()
    assert not (weights["batchtopk", "none"] == weights["batchtopk", "bf16"]).all()
