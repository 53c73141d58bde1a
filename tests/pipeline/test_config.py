"""Run configs: the examples parse and match the demos; bad configs say what, where and how."""

import datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from saeatlas.cli import app
from saeatlas.demo import digits_config, minilm_config
from saeatlas.errors import ConfigError
from saeatlas.pipeline import RunConfig, load_run_config

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize("name", ["digits.yaml", "minilm.yaml"])
def test_examples_parse_and_round_trip(name):
    cfg = load_run_config(EXAMPLES / name)
    assert RunConfig.from_dict(yaml.safe_load(cfg.dumps())) == cfg


def test_examples_are_the_demos():
    assert load_run_config(EXAMPLES / "digits.yaml") == digits_config()
    assert load_run_config(EXAMPLES / "minilm.yaml") == minilm_config()


BASE = {"model": "m:f", "inputs": "x.npy", "layers": ["a"]}


def error(data) -> str:
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(data, source="run.yaml")
    return str(e.value)


@pytest.mark.parametrize(
    "data, expected",
    [
        ({**BASE, "sweeep": {}}, ["run.yaml", "`sweeep`", "Did you mean `sweep`", "'train'"]),
        ({**BASE, "train": {"kk": 4}}, ["`train.kk`", "Did you mean `k`", "'architecture'"]),
        ({**BASE, "sweep": {"over": "lr"}}, ["`sweep.over`", "'lr'", "'k'", "'l1_coefficient'"]),
        (
            {**BASE, "train": {"architecture": "gated"}},
            ["`train.architecture`", "'gated'", "'topk'", "'jumprelu'"],
        ),
        ({**BASE, "train": {"k": "many"}}, ["`train.k`", "an integer", "'many'"]),
        ({**BASE, "analyze": {"nulls": ["coin"]}}, ["`analyze.nulls`", "'coin'", "'rewiring'"]),
        (
            {**BASE, "ablation": {"mode": "noise"}},
            ["`ablation.mode`", "'noise'", "'mean'", "'zero'"],
        ),
        ({**BASE, "capture": {"spatial": "avg"}}, ["`capture.spatial`", "'avg'", "'positions'"]),
        ({**BASE, "sweep": {"values": [8]}}, ["`sweep.values`", "[8]", "at least two"]),
        ({**BASE, "sweep": {"seeds": 3}}, ["`sweep.seeds`", "3", "1 or 2"]),
        ({**BASE, "report": {"enabled": "yes please"}}, ["`report.enabled`", "true or false"]),
        ({**BASE, "layers": "act1"}, ["`layers`", "a list of text", "'act1'"]),
        ({**BASE, "train": [1, 2]}, ["`train`", "mapping"]),
        # a number as a keyword (YAML `{1: 2, a: 3}`) crashed the run's fingerprints
        ({**BASE, "model_args": {1: 2, "a": 3}}, ["`model_args`", "[1]", "names"]),
        # and a date (YAML `2024-01-01`) when it recorded the config
        (
            {**BASE, "inputs_args": {"d": [datetime.date(2024, 1, 1)]}},
            ["`inputs_args.d`", "date", "quote"],
        ),
        ({"inputs": "x.npy"}, ["missing", "`model`", "`layers`"]),
        ({"model": "m:f", "inputs": "x", "layer": ["a"]}, ["`layer`", "Did you mean `layers`"]),
        (
            {**BASE, "train": {"architecture": "relu"}},
            ["`sweep.over`", "'k'", "`train.architecture`", "'relu'", "'l1_coefficient'"],
        ),
    ],
)
def test_bad_configs_name_field_value_and_allowed(data, expected):
    message = error(data)
    for part in expected:
        assert part in message, message


def test_numbers_from_yaml_text_are_read():
    # YAML 1.1 reads 1e-3 (no dot) as text; a float field accepts it
    cfg = RunConfig.from_dict({**BASE, "train": {"l1_coefficient": "1e-3", "k": 8.0}})
    assert cfg.train.l1_coefficient == 1e-3 and cfg.train.k == 8


def test_relative_paths_are_found_beside_the_config(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"")
    (tmp_path / "model.py").write_text("")
    cfg_file = tmp_path / "sub.yaml"
    cfg_file.write_text(
        "model: model.py:build\ninputs: x.npy\nlayers: [a]\nout: run\nlabels: missing.npy\n"
    )
    cfg = load_run_config(cfg_file)
    assert cfg.model == f"{tmp_path.resolve() / 'model.py'}:build"
    assert cfg.inputs == str((tmp_path / "x.npy").resolve())
    assert cfg.labels == "missing.npy" and cfg.out == str(tmp_path / "run")


def test_cli_check_and_bad_config(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(EXAMPLES / "digits.yaml"), "--check"])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "n_seed_saes: 2" in result.output
    bad = tmp_path / "bad.yaml"
    text = (EXAMPLES / "digits.yaml").read_text()
    bad.write_text(text.replace("  mode: mean\n", "  mode: mean\n  n_randon: 100\n"))
    result = runner.invoke(app, ["run", str(bad)])
    assert result.exit_code == 1, result.output
    assert "`ablation.n_randon`" in result.output and "Did you mean `n_random`" in result.output
    assert "Traceback" not in result.output
    bad.write_text("- just\n- a list\n")
    result = runner.invoke(app, ["run", str(bad)])
    assert result.exit_code == 1 and "mapping" in result.output


def test_docs_describe_every_field():
    from dataclasses import fields

    from saeatlas.pipeline.config import SECTIONS

    doc = (Path(__file__).parents[2] / "docs" / "pipeline.md").read_text()
    for f in fields(RunConfig):
        assert f"`{f.name}`" in doc, f.name
    for name, cls in SECTIONS.items():
        section = doc.split(f"### `{name}`", 1)[1]
        for f in fields(cls):
            assert f"| `{f.name}` |" in section, f"{name}.{f.name}"
