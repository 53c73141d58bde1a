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
