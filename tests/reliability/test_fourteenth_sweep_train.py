"""Fourteenth hostile sweep, training and CLI half: a torchrun environment whose other
ranks never start, autocast that changes nothing, SIGTERM and Ctrl-C, an option given
twice, a dead window beyond 64 bits."""

from __future__ import annotations

import logging
import socket

import pytest


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


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_sigterm_and_ctrl_c_stop_with_one_line_and_resume(tmp_path, guarded, run_cli, name, code):
    """SIGTERM ended a command without a word (Python's default: no `finally` ran) and
    Ctrl-C with exit code 130 and nothing said; both now stop as Ctrl-C did, with one
    line that advises `--resume`, the lock released, and the resumed SAE is the
    uninterrupted one."""
    import fcntl
    import os
    import signal

    from saeatlas.cli.app import _on_sigterm
    from saeatlas.train.run import _Run

    cli, _ = run_cli
    flags = ["--acts", guarded.store, "--d-sae", "16", "--k", "2", "--tokens", "640"]
    flags += ["--batch-size", "32", "--seeds", "1", "--checkpoint-every", "5", "-q"]
    assert cli("train", *flags, "--out", tmp_path / "ref").exit_code == 0
    real, sig = _Run.train_step, getattr(signal, name)

    def dying(self, batch):
        if self.step == 7:
            os.kill(os.getpid(), sig)
        return real(self, batch)

    before = signal.signal(signal.SIGTERM, _on_sigterm)  # what `main` installs
    # Python's own Ctrl-C handler (a test run's worker process may have SIGINT ignored,
    # or replaced by an earlier test)
    before_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _Run.train_step = dying
        r = cli("train", *flags, "--out", tmp_path / "sae")
    finally:
        _Run.train_step = real
        signal.signal(signal.SIGTERM, before)
        signal.signal(signal.SIGINT, before_int)
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == code and len(lines) == 1, r.output
    assert lines[0].startswith(f"Error: Stopped by {name}") and "train --resume" in lines[0]
    with open(tmp_path / ".sae.lock", "a") as f:  # released: another writer may take it
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert cli("train", *flags, "--out", tmp_path / "sae", "--resume").exit_code == 0
    weights = [(tmp_path / d / "sae_weights.safetensors").read_bytes() for d in ("ref", "sae")]
    assert weights[0] == weights[1]


def test_an_option_given_twice_with_two_values_is_refused(guarded, run_cli):
    """`--k 2 ... --k 3` trained with k = 3 without a word (click keeps the last value),
    so a flag added at the end of a long command line replaced one before it."""
    cli, one_line_error = run_cli
    train = ["train", "--acts", guarded.store, "--out", guarded.root / "new-sae", "-q"]
    one_line_error(cli(*train, "--k", "2", "--k", "3"), "--k is given 2 times ('2', then '3')")
    one_line_error(cli(*train, "--lr", "1e-3", "--lr=2e-3"), "--lr is given 2 times")
    one_line_error(cli(*train, "--out", guarded.root / "b"), "--out is given 2 times")
    assert not (guarded.root / "new-sae").exists() and not (guarded.root / "b").exists()


def test_a_dead_window_beyond_64_bits_is_one_line(guarded, run_cli):
    """`--dead-window 1e20` (as digits) passed the check and ended the first step in
    "OverflowError: int too big to convert", a traceback."""
    cli, one_line_error = run_cli
    train = ["train", "--acts", guarded.store, "--out", guarded.root / "new-sae", "-q"]
    one_line_error(cli(*train, "--dead-window", str(10**20)), "--dead-window must be an integer of")
    assert not (guarded.root / "new-sae").exists()
