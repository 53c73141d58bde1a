"""Eleventh hostile sweep, capture half: what a resumed capture judges, its inputs, its
model's mode."""

from __future__ import annotations

import warnings

import pytest
import torch


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def test_a_resumed_half_precision_capture_names_the_units_its_first_run_rounded(
    tmp_path, monkeypatch
):
    """The float16 'unit became constant' warning saw only the batches of the run that
    completed the store: a unit that varied only in the rows of a killed first run (and
    that float16 made constant) was not named after `capture --resume`."""
    import saeatlas.store.commit as commit_module
    from saeatlas.capture import CaptureConfig, capture_activations

    x = torch.randn(60, 3, generator=torch.Generator().manual_seed(0))
    x[:, 1] = 1e4
    x[:32, 1] += torch.linspace(-3, 3, 32)  # varies in the first shard's rows only
    model = torch.nn.Sequential(torch.nn.Identity())
    cfg = CaptureConfig(batch_size=16, shard_rows=32, store_dtype="float16")
    real, calls = commit_module.write_shard, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(commit_module, "write_shard", dying)
    with pytest.raises(Killed):
        capture_activations(model, x, ["0"], tmp_path / "s", cfg, progress=False)
    monkeypatch.undo()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        store = capture_activations(
            model, x, ["0"], tmp_path / "s", cfg, resume=True, progress=False
        )
    assert store.n_rows == 60 and store.std[1] == 0
    said = [str(w.message) for w in seen if "constant in the" in str(w.message)]
    assert len(said) == 1 and "unit 1 of layer '0'" in said[0], said
    assert "from 9997 to 10003" in said[0], said
