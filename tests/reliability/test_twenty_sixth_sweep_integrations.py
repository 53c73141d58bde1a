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


@pytest.mark.parametrize(
    "args, needle",
    [
        ({"cases": "null"}, "--cases must be a non-empty tuple, such as ('easy',)"),
        ({"cases": ()}, "--cases must be a non-empty tuple"),
        ({"cases": ("null", "null")}, "--cases names ['null'] more than once"),
        ({"seeds": (0, 0)}, "`seeds` names ['0'] more than once"),
        ({"seeds": ()}, "`seeds` must be a non-empty tuple, such as (0, 1), got ()"),
        ({"seeds": 3}, "`seeds` must be a non-empty tuple, such as (0, 1), got 3"),
        ({"seeds": ("a",)}, "A seed of `seeds` must be an integer, got 'a'"),
        ({"seeds": (-1,)}, "`seeds` must be in [0, 4294967295], got -1"),
        ({"settings": None}, "`settings` must be a ValidationSettings, got NoneType"),
    ],
)
def test_validate_refuses_cases_and_seeds_it_cannot_run_as_asked(args, needle):
    """`validate(cases="null")` was told "Unknown preset 'n'"; a case or a seed given twice
    was run again and listed twice (the seed again agreed with its first run at ARI 1.0,
    as two seeds that agree would); no case or seed gave an empty table; seeds=3 and
    ("a",) ended in TypeError tracebacks, seed -1 was named as "`seed` ... got -3", and
    settings=None in an AttributeError. `saeatlas validate` refused only some of them."""
    from saeatlas.errors import ConfigError
    from saeatlas.structure.synthetic.validate import ValidationSettings, validate

    small = ValidationSettings(n_rows=1024, d_sae=16, tokens=1024)  # quick if it runs
    with pytest.raises(ConfigError) as e:
        validate(**{"cases": ("null",), "settings": small, **args})
    assert needle in str(e.value)


def test_validate_cli_still_refuses_a_case_named_twice(run_cli):
    """The CLI's own check of --cases moved into `validate`; the CLI still says it."""
    cli, one_line = run_cli
    one_line(cli("validate", "--cases", "null", "null"), "names ['null'] more than once")
