"""The seventh hostile sweep's cases in capture, store, train, sweep and run: each
failed (a wrong result or a traceback) before its fix."""

from __future__ import annotations

import json

from saeatlas.sweep.sweep import sweep_members


def test_a_sweep_read_from_another_directory_gives_its_own_members(tmp_path, monkeypatch):
    """sweep.json records each member as the sweep saw its --out ('sw/k-2/seed-0',
    relative to where it ran); read from a directory holding another sweep of that name,
    the other sweep's members were taken, without a word (analyze --sweep)."""
    for where in ("a", "b"):
        for v in (2, 4):
            (tmp_path / where / "sw" / f"k-{v}" / "seed-0").mkdir(parents=True)
    points = [{"value": v, "path": f"sw/k-{v}/seed-0"} for v in (2, 4)]
    (tmp_path / "a" / "sw" / "sweep.json").write_text(json.dumps({"over": "k", "points": points}))
    monkeypatch.chdir(tmp_path / "b")
    over, members = sweep_members(tmp_path / "a" / "sw")
    assert over == "k"
    assert [p.resolve() for _, p in members] == [
        (tmp_path / "a" / "sw" / f"k-{v}" / "seed-0").resolve() for v in (2, 4)
    ]
