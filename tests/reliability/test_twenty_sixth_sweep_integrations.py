"""The twenty-sixth hostile sweep's cases in the integrations and the run layer (run
configs, `run --check`, the run's Python API, reruns over a run's outputs): each was read
wrongly, ended in a traceback or a misleading message, or changed work it should not
have before its fix."""

from __future__ import annotations

import pytest

#: The run config's settings besides the model and its inputs: no sweep, a tiny SAE.
SMALL = {
    "layers": ["1"],
    "sweep": {"enabled": False},
    "train": {"d_sae": 16, "k": 2, "tokens": 512, "batch_size": 64},
    "stability": {"n_seed_saes": 0},
}


def _config(outputs, tmp_path, **sections: object) -> object:
    """A run config (JSON is YAML) of the protected model and inputs, ``sections``
    replacing :data:`SMALL`'s."""
    import json

    config = tmp_path / "run.yaml"
    given = {"model": outputs.model, "inputs": str(outputs.inputs), **SMALL, **sections}
    config.write_text(json.dumps(given))
    return config


def test_run_check_refuses_units_too_many_for_the_analysis_memory(
    outputs, tmp_path, run_cli, monkeypatch
):
    """`run --check` called valid a run whose units' correlation view did not fit in the
    machine's memory; the run refused it only after the capture and the training, advising
    flags of `saeatlas analyze` (--layers, --seeds 1) that `run` has not."""
    import saeatlas.structure.inputs as inputs

    monkeypatch.setattr(inputs, "memory_bytes", lambda device: 4000)
    cli, one_line = run_cli
    r = cli("run", _config(outputs, tmp_path), "--check", "--out", tmp_path / "run")
    line = one_line(r, "correlation view of the SAE's 10 units", "`stability.n_seed_saes`")
    assert "--seeds" not in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        ({"cfg": "run.yaml"}, "`cfg` must be a RunConfig, got the path 'run.yaml'"),
        ({"out": 5}, "`out` must be a path (str or pathlib.Path), got 5"),
        ({"out": ""}, "--out '' names no folder"),
        ({"overwrite": "no"}, "`overwrite` must be True or False, got 'no'"),
    ],
)
def test_check_run_refuses_arguments_of_the_wrong_type(outputs, tmp_path, args, needle):
    """`check_run("run.yaml")` ended in an AttributeError traceback, `out=5` in pathlib's
    TypeError, and `overwrite="no"` called a run directory of other settings valid (read
    by its truth), where `run_pipeline` refuses each in one line."""
    from saeatlas.errors import ConfigError
    from saeatlas.pipeline import load_run_config
    from saeatlas.pipeline.check import check_run

    cfg = load_run_config(_config(outputs, tmp_path))
    kwargs = {"cfg": cfg, "out": tmp_path / "run", **args}
    with pytest.raises(ConfigError) as e:
        check_run(**kwargs)
    assert needle in str(e.value)
