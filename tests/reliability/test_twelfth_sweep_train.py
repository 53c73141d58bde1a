"""Twelfth hostile sweep, training and evaluation half: a downstream loss that turns
NaN, evaluation and training settings that were named as fields, not flags."""

from __future__ import annotations

import numpy as np


def test_a_nan_downstream_loss_on_one_input_is_named_not_reported_as_nan(
    tmp_path, guarded, run_cli
):
    """`evaluate --model --inputs` with a NaN in one input printed loss_clean nan and
    fraction_recovered nan, exit code 0."""
    cli, one_line_error = run_cli
    x = np.load(guarded.inputs)[:40].copy()
    x[29, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(40) % 8)
    args = ["evaluate", "--sae", guarded.sae, "--acts", guarded.store, "--model", guarded.model]
    args += ["--inputs", tmp_path / "x.npy", "--labels", tmp_path / "y.npy"]
    one_line_error(cli(*args, "--batch-size", "16"), "NaN or Inf on input 29")


def test_the_loss_recovered_of_another_model_than_the_captured_one_says_it_is_a_transfer(
    tmp_path, guarded, run_cli, caplog
):
    """`evaluate --model` of the same code seeded otherwise reported that network's loss
    recovered by the SAE of the store's model without a word. It is not refused (an
    SAE's transfer to a fine-tuned model is a question of its own, Kissane et al. 2024),
    but the output says which figure it is."""
    cli, _ = run_cli
    other = tmp_path / "other.py"
    other.write_text((guarded.root / "model.py").read_text())
    other.write_text(other.read_text().replace("manual_seed(0)", "manual_seed(1)"))
    np.save(tmp_path / "x.npy", np.load(guarded.inputs)[:40])
    np.save(tmp_path / "y.npy", np.arange(40) % 8)
    args = ["evaluate", "--sae", guarded.sae, "--acts", guarded.store]
    args += ["--inputs", tmp_path / "x.npy", "--labels", tmp_path / "y.npy"]
    for model, warned in ((guarded.root / "model.py", False), (other, True)):
        caplog.clear()
        r = cli(*args, "--model", f"{model}:build")
        assert r.exit_code == 0, r.output
        said = " ".join(rec.getMessage() for rec in caplog.records)
        assert ("transfers to this model" in said and "not the one the store" in said) == warned


def test_an_integer_in_yaml_exponent_notation_is_read_as_the_number(tmp_path):
    """`tokens: 2e3` in a config was refused ("must be an integer, got '2e3'") where
    `lr: 1e-3` and `tokens: 2.0e+3` were read: YAML 1.1 reads an exponent without a dot
    as text."""
    import pytest
    import yaml

    from saeatlas._config_cli import config_from_mapping
    from saeatlas.errors import ConfigError
    from saeatlas.train import TrainConfig

    data = yaml.safe_load("tokens: 2e3\nseed: 12345678901234567891e0\nlr: 1e-3\n")
    assert isinstance(data["tokens"], str)  # what YAML gives
    cfg = config_from_mapping(TrainConfig, {**data, "seed": "7e1"})
    assert (cfg.tokens, cfg.seed, cfg.lr) == (2000, 70, 1e-3)
    # exact, not via a float
    with pytest.raises(ConfigError, match="`seed` must be an integer of at most 64 bits"):
        config_from_mapping(TrainConfig, data)
    for bad in ("2.5", "nan", "inf", "1e", "two"):
        with pytest.raises(ConfigError, match="`tokens` must be an integer"):
            config_from_mapping(TrainConfig, {"tokens": bad})


def test_a_flag_of_the_swept_setting_is_refused_not_ignored(tmp_path, guarded, run_cli, forbid):
    """`sweep --over k --values 2 4 --k 3` trained k 2 and 4 and dropped --k 3 without
    a word."""
    from saeatlas.sweep import members

    cli, one_line_error = run_cli
    forbid(members, "train_family")
    args = ["sweep", "--acts", guarded.store, "--out", tmp_path / "s", "--values", "2", "4"]
    one_line_error(cli(*args, "--over", "k", "--k", "3"), "--k 3 is not read", "--values")
    line = one_line_error(
        cli(*args, "--over", "l1_coefficient", "--l1-coefficient", "0.5"), "--l1-coefficient 0.5"
    )
    assert not (tmp_path / "s").exists(), line


def test_a_sparsity_coefficient_beyond_float32_is_refused(tmp_path, guarded, run_cli):
    """`sweep --over l1_coefficient --values 1e40 2e40` trained every member as the same
    SAE (the penalty is inf in float32) and recommended one, without a word; `lr`
    had this bound already."""
    cli, one_line_error = run_cli
    args = ["sweep", "--acts", guarded.store, "--out", tmp_path / "s", "--architecture", "relu"]
    one_line_error(cli(*args, "--over", "l1_coefficient", "--values", "1e40", "2e40"), "3.4e+38")
    args = ["train", "--acts", guarded.store, "--out", tmp_path / "t"]
    one_line_error(cli(*args, "--l0-coefficient", "1e39"), "--l0-coefficient must be in [0,")
    assert not (tmp_path / "s").exists() and not (tmp_path / "t").exists()
