"""Thirteenth hostile sweep, capture/training/run half: run-config settings the run
never reads, sweep values out of range named as another flag."""

from __future__ import annotations

import pytest
import yaml

from saeatlas.errors import ConfigError


def test_a_run_config_that_sweeps_k_says_its_train_k_is_not_read(
    tmp_path, guarded, run_cli, caplog
):
    """`sweep: {over: k}` beside `train: {k: 6}`: the knee's k replaced 6 in every stage
    without a word. `run` (and `run --check`) now says so, naming both keys; a run
    config without `train.k`, or with the sweep off, is not warned about."""
    cli, _ = run_cli
    base = {
        "model": guarded.model,
        "inputs": str(guarded.inputs),
        "layers": ["1"],
        "sweep": {"over": "k", "values": [2, 4]},
        "train": {"d_sae": 16, "k": 6},
    }
    cases = (
        (base, True),
        ({**base, "train": {"d_sae": 64}}, False),
        ({**base, "sweep": {"enabled": False}}, False),
    )
    for i, (config, warned) in enumerate(cases):
        path = tmp_path / f"c{i}.yaml"
        path.write_text(yaml.safe_dump(config))
        caplog.clear()
        r = cli("run", path, "--check", "--out", tmp_path / f"run{i}")
        assert r.exit_code == 0, r.output
        log = " ".join(rec.getMessage() for rec in caplog.records)
        assert ("`train.k` (6) is not read" in log and "`sweep.over` is 'k'" in log) == warned


def test_a_run_config_says_which_train_settings_its_architecture_does_not_read(tmp_path):
    """`train.l1_coefficient` beside a TopK SAE was dropped without a word in a run
    config, where `saeatlas train --l1-coefficient` warns."""
    from saeatlas.pipeline.config import RunConfig

    cfg = RunConfig.from_dict(
        {"model": "m.py:f", "inputs": "x.npy", "layers": ["a"], "sweep": {"enabled": False}}
    )
    said = cfg.unread_train_settings({"l1_coefficient", "k", "d_sae"})
    assert len(said) == 1 and said[0].startswith("`train.l1_coefficient` is read only"), said


def test_a_sweep_value_out_of_range_is_named_as_one_of_values(guarded, run_cli):
    """`sweep --over l1_coefficient --values 1e40 2e40` said `--l1-coefficient must be in
    [0, 3.4e+38]`, a flag the user never gave; a second value above `--d-sae` said
    `--k`. The error now names --values."""
    cli, one_line_error = run_cli
    args = ["sweep", "--acts", guarded.store, "--out", guarded.root / "new-sweep"]
    for flags, needles in (
        (
            ["--over", "l1_coefficient", "--architecture", "relu", "--values", "1e40", "2e40"],
            ["--values must be in [0, 3.4e+38], got 1e+40"],
        ),
        (
            ["--over", "l0_coefficient", "--architecture", "jumprelu", "--values", "1", "1e39"],
            ["--values must be in [0, 3.4e+38], got 1e+39"],
        ),
        (
            ["--over", "k", "--values", "4", "100", "--d-sae", "16"],
            ["--values (100) cannot exceed --d-sae (16)", "Lower --values"],
        ),
    ):
        line = one_line_error(cli(*args, *flags), *needles)
        assert "--k" not in line and "coefficient must" not in line, line


def test_a_torchrun_environment_set_half_way_by_hand_is_one_line(guarded, run_cli, monkeypatch):
    """`WORLD_SIZE=2` exported by hand without `RANK` or `MASTER_ADDR` ended in torch's
    ValueError traceback; `RANK=5` of 2 waited for ranks that never come (torch's
    30-minute rendezvous); `RANK=1` left set without `WORLD_SIZE` trained and saved as
    one process but printed nothing, taken for a rank other than 0."""
    cli, one_line_error = run_cli
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    train = ["train", "--acts", guarded.store, "--out", guarded.root / "new-sae", "-q"]
    cases = (
        ({"WORLD_SIZE": "2"}, ["WORLD_SIZE=2 but not RANK, MASTER_ADDR, MASTER_PORT"]),
        ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1"}, ["not MASTER_PORT"]),
        ({"WORLD_SIZE": "two"}, ["WORLD_SIZE is 'two', not a whole number"]),
        (
            {"WORLD_SIZE": "2", "RANK": "5", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"},
            ["RANK=5 with WORLD_SIZE=2", "ranks are 0 to 1"],
        ),
    )
    for env, needles in cases:
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            one_line_error(cli(*train), *needles, "torchrun")
            one_line_error(cli("info", guarded.store), *needles)
    monkeypatch.setenv("RANK", "1")  # left from another job: still one process, rank 0
    r = cli("info", guarded.store)
    assert r.exit_code == 0 and "rows" in r.output, r.output


def test_a_toml_file_named_yaml_is_named_as_toml(tmp_path, guarded, run_cli):
    """A TOML file named `.yaml` was refused as "must hold a mapping of settings, not
    str" (`k = 4` is one YAML text) or "not valid YAML ... expected '<document start>'"
    (`[train]`), neither of which names the cause; a `.toml` name was already refused."""
    pytest.importorskip("tomllib")
    cli, one_line_error = run_cli
    texts = ("k = 4\nd_sae = 16\n", "[train]\nk = 4\n", 'model = "m.py:f"\nlayers = ["a"]\n')
    for i, text in enumerate(texts):
        path = tmp_path / f"c{i}.yaml"
        path.write_text(text)
        one_line_error(cli("run", path, "--check"), "is TOML (`key = value`)", "YAML")
        train = ["train", "--acts", guarded.store, "--out", tmp_path / "sae", "--config", path]
        one_line_error(cli(*train), "is TOML")
    (tmp_path / "list.yaml").write_text("- k\n- 4\n")  # YAML of another kind: as before
    one_line_error(cli("run", tmp_path / "list.yaml"), "must hold a mapping", "not list")


def test_sweep_says_which_settings_of_its_config_file_it_does_not_read(
    tmp_path, guarded, run_cli, caplog
):
    """`sweep --over k --config t.yaml` with `k: 3` in the file (a run config's `train`
    section holds one) swept --values without a word, where `--k 3` is refused; and
    `--l1-coefficient` beside a TopK sweep was dropped without the warning `train` gives."""
    cli, _ = run_cli
    (tmp_path / "t.yaml").write_text("train:\n  k: 3\n  d_sae: 32\n")
    args = ["sweep", "--acts", guarded.store, "--out", tmp_path / "sw", "--over", "k"]
    args += ["--values", "2", "4", "--seeds", "3"]  # refused by sweep() after the flags' checks
    for extra, needle in (
        (["--config", tmp_path / "t.yaml"], "`k: 3` in "),
        (["--l1-coefficient", "3"], "`l1_coefficient` is read only with architecture relu"),
    ):
        caplog.clear()
        r = cli(*args, *extra)
        assert r.exit_code == 1 and "--seeds (`seeds`) must be 1 or 2" in r.output, r.output
        assert needle in " ".join(rec.getMessage() for rec in caplog.records)


def test_a_k_sweep_with_a_small_d_sae_needs_no_train_k():
    """`sweep: {over: k, values: [2, 4]}` with `train: {d_sae: 16}` was refused, "`train.k`
    (32) cannot exceed `train.d_sae` (16)", for a k the sweep replaces: the run needed a
    `train.k` it then did not read."""
    from saeatlas.pipeline.config import RunConfig

    base = {"model": "m.py:f", "inputs": "x.npy", "layers": ["a"]}
    cfg = RunConfig.from_dict(
        {**base, "sweep": {"over": "k", "values": [4, 2]}, "train": {"d_sae": 16}}
    )
    assert cfg.train.k == 2 and cfg.train.d_sae == 16
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # the run's own record reads back
    with pytest.raises(ConfigError, match=r"`train.k` \(32\) cannot exceed"):  # no sweep
        RunConfig.from_dict({**base, "sweep": {"enabled": False}, "train": {"d_sae": 16}})
