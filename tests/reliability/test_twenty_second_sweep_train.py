"""Twenty-second hostile sweep, training, the SAE's files and their use: each case
failed (a traceback, a wrong result or a misleading word) before its fix."""

from __future__ import annotations

import numpy as np
import torch

from saeatlas.evaluate import evaluate_sae
from saeatlas.sae import SAEConfig, SparseAutoencoder


def test_a_unit_held_at_1e20_does_not_hide_the_others_variance(tmp_path):
    """`evaluate` of a store with one unit constant at 1e20 said "Rows 0:300 do not vary
    (every row is the same)": the rounding floor was judged against the whole row's sum
    of squares, which that unit alone made 1e40 times the others' variance."""
    x = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    x[:, 3] = 0
    sae = SparseAutoencoder(SAEConfig(d_in=6, d_sae=8, k=2), torch.Generator().manual_seed(0))
    with torch.no_grad():  # the SAE gives unit 3 its constant value back, exactly
        sae.W_dec[:, 3] = 0
        sae.W_enc[3] = 0  # and the latents do not read it
    np.save(tmp_path / "plain.npy", x)
    plain = evaluate_sae(sae, tmp_path / "plain.npy")
    x[:, 3] = 1e20
    with torch.no_grad():
        sae.b_dec[3] = 1e20
    np.save(tmp_path / "held.npy", x)
    held = evaluate_sae(sae, tmp_path / "held.npy")
    assert np.isclose(held.fvu, plain.fvu, rtol=1e-6) and held.l0 == plain.l0


#: A training of 20 steps (640 rows in batches of 32), two seeds.
TWO_SEEDS = ["--seeds", "2", "--d-sae", "8", "--k", "2", "--batch-size", "32", "--tokens", "640"]


def _complete_pair(tmp_path, run_cli):
    """`train --seeds 2` into tmp_path/sae and sae-seed1, the second then removed (as a
    kill before it was saved leaves them); returns the arguments that trained them."""
    cli, _ = run_cli
    x = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    args = ["train", "--acts", tmp_path / "a.npy", "--out", tmp_path / "sae", *TWO_SEEDS, "-q"]
    assert cli(*args).exit_code == 0
    for f in (tmp_path / "sae-seed1").iterdir():
        f.unlink()
    (tmp_path / "sae-seed1").rmdir()
    return args


def test_a_cfg_json_with_a_key_given_twice_is_refused(tmp_path, outputs, run_cli):
    """cfg.json's `"k": 4, "k": 8` was read as k 8 without a word (Python keeps the last
    key; other tools the first), as atlas.json's were before the eighth sweep."""
    import shutil

    cli, one_line = run_cli
    sae = tmp_path / "sae"
    shutil.copytree(outputs.sae, sae)
    cfg = sae / "cfg.json"
    cfg.write_text(cfg.read_text().replace('"k": 4,', '"k": 4, "k": 8,', 1))
    one_line(cli("evaluate", "--sae", sae, "--acts", outputs.store), "the key 'k' is given twice")


def test_a_kept_sae_whose_weights_were_damaged_is_refused_before_the_rest_train(tmp_path, run_cli):
    """`train --seeds 2 --resume` kept the complete first SAE, whose weights were cut
    short since, trained the second, then ended in safetensors' words; with
    --overwrite it is trained again."""
    cli, one_line = run_cli
    args = _complete_pair(tmp_path, run_cli)
    weights = tmp_path / "sae" / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    one_line(cli(*args, "--resume"), "holds a complete SAE whose files are damaged", "--overwrite")
    assert not (tmp_path / "sae-seed1").exists()
    r = cli(*args, "--resume", "--overwrite")
    assert r.exit_code == 0 and len(weights.read_bytes()) > 500, r.output


def test_a_kept_sae_whose_metrics_were_damaged_is_refused(tmp_path, run_cli):
    """A bad line in a kept SAE's metrics.jsonl ended `train --resume` in json's
    JSONDecodeError traceback, after the rest were trained."""
    cli, one_line = run_cli
    args = _complete_pair(tmp_path, run_cli)
    with open(tmp_path / "sae" / "metrics.jsonl", "a") as f:
        f.write('{"step": 1, bad\n')
    one_line(cli(*args, "--resume"), "line 3 of", "metrics.jsonl' is not JSON")
    assert not (tmp_path / "sae-seed1").exists()


def test_a_kept_sae_whose_recorded_layers_were_edited_is_refused(tmp_path, run_cli):
    """cfg.json's `store_layers` edited to a list of objects ended `train --resume` in
    "unhashable type: 'dict'"."""
    import json

    cli, one_line = run_cli
    args = _complete_pair(tmp_path, run_cli)
    cfg = tmp_path / "sae" / "cfg.json"
    raw = json.loads(cfg.read_text())
    raw["metadata"]["store_layers"] = [{"a": 1}]
    cfg.write_text(json.dumps(raw))
    one_line(cli(*args, "--resume"), "trained on other rows", "its layers' columns were")


def test_train_family_refuses_one_directory_given_twice(tmp_path):
    """`train_family(outs=["o", "o"])` trained both SAEs, wrote the second over the
    first and returned two results saved at 'o' (a link was refused, the same path
    not)."""
    import pytest

    from saeatlas.store.lock import OutputError
    from saeatlas.train import TrainConfig, train_family

    np.save(tmp_path / "a.npy", np.random.default_rng(0).normal(size=(64, 4)).astype("f4"))
    cfg = TrainConfig(d_sae=4, k=1, batch_size=32, tokens=64)
    for outs in ([tmp_path / "o", tmp_path / "o"], [str(tmp_path / "o"), f"{tmp_path}/./o"]):
        with pytest.raises(OutputError, match="is given twice as an output"):
            train_family(tmp_path / "a.npy", [cfg, cfg], outs, progress=False)
    assert not (tmp_path / "o").exists()


def test_train_family_and_train_ensemble_check_their_arguments(tmp_path, forbid):
    """`train_family` and `train_ensemble` took their arguments as given, as
    `train_sae` did before the twenty-first sweep: a dict as a config ended in an
    AttributeError, `outs="dir"` was refused as "5 output directories for 1 configs"
    (one per letter), a number as a path ended in pathlib's TypeError, and
    `overwrite="no"` replaced the SAEs there."""
    import pytest

    from saeatlas.errors import ConfigError
    from saeatlas.train import TrainConfig, ensemble, family, train_ensemble, train_family

    forbid(family, "_train_family")
    forbid(ensemble, "train_sae")
    acts, cfg = tmp_path / "a.npy", TrainConfig(d_sae=4, k=1, batch_size=32, tokens=64)
    cases = [
        (lambda: train_family(acts, [{"k": 1}]), "`configs[0]` must be a TrainConfig"),
        (lambda: train_family(acts, (c for c in [cfg])), "`configs` must be a non-empty list"),
        (lambda: train_family(acts, [cfg], "dir"), "`outs` must be a list of SAE directories"),
        (lambda: train_family(acts, [cfg], [5]), "`outs[0]` must be a path"),
        (lambda: train_family(acts, [cfg], progress="no"), "`progress` must be True or False"),
        (lambda: train_ensemble(acts, {"k": 1}, tmp_path / "e"), "`cfg` must be a TrainConfig"),
        (lambda: train_ensemble(acts, cfg, 5), "`out` must be a path"),
        (lambda: train_ensemble(acts, cfg, tmp_path / "e", overwrite="no"), "`overwrite` must"),
        (lambda: train_ensemble(acts, cfg, tmp_path / "e", resume="no"), "`resume` must"),
    ]
    for call, needle in cases:
        with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            call()


def test_a_loss_recovered_with_nothing_to_recover_is_undefined(tmp_path, outputs, run_cli):
    """`evaluate --model` where zeroing the SAE's layers lowers the loss (random labels)
    printed fraction_recovered 1.2139 for a reconstruction worse than both the clean and
    the zeroed model: the ratio of two negative gaps."""
    cli, _ = run_cli
    np.save(tmp_path / "y.npy", np.random.default_rng(0).integers(0, 8, size=300))
    args = ["evaluate", "--sae", outputs.sae, "--acts", outputs.store, "--model", outputs.model]
    r = cli(*args, "--inputs", outputs.inputs, "--labels", tmp_path / "y.npy")
    assert r.exit_code == 0, r.output
    row = next(line for line in r.output.splitlines() if "fraction_recovered" in line)
    assert "undefined" in row, r.output
    assert "zeroing the SAE's layers does not raise the model's loss" in r.output


def test_a_batch_of_identical_rows_does_not_weigh_1e12_batches(tmp_path):
    """A store whose rows are mostly zero (a ReLU layer's: every unit off) gives batches
    of identical rows, with no variance: their FVU divided the squared error by 1e-38,
    so the TopK loss of one such batch was 1e12 and outweighed every other, and
    metrics.jsonl (the report's training curves) logged an FVU of 9e12."""
    from saeatlas.train import TrainConfig, train_sae

    x = np.zeros((400, 8), dtype=np.float32)
    rng = np.random.default_rng(0)
    x[:20] = np.abs(rng.normal(size=(20, 8)))
    rng.shuffle(x)
    np.save(tmp_path / "a.npy", x)
    cfg = TrainConfig(d_sae=16, k=2, batch_size=32, tokens=960, log_every=1)
    result = train_sae(tmp_path / "a.npy", cfg, progress=False)
    assert max(r["fvu"] for r in result.metrics) < 10


def test_jumprelu_settings_that_are_0_in_float32_are_refused(guarded, run_cli):
    """`--jumprelu-init-threshold 1e-46` trained and saved a "jumprelu" SAE whose
    thresholds were 0 for good (the exp of their logarithm underflows, and so does its
    gradient): a ReLU SAE, without a word; a bandwidth of 1e-46 never let the
    thresholds learn. `--l1-coefficient 1e-320` was refused so before."""
    cli, one_line = run_cli
    args = ["train", "--acts", guarded.store, "--out", guarded.root / "new", "--seeds", "1"]
    for flag in ("--jumprelu-init-threshold", "--jumprelu-bandwidth"):
        r = cli(*args, "--architecture", "jumprelu", flag, "1e-46")
        one_line(r, f"{flag} (1e-46) is 0 in float32", "give at least 1.4e-45")


def test_raw_activations_whose_squares_overflow_float32_are_named(tmp_path, run_cli, forbid):
    """`--normalize none` on a unit that varies by 1e19 stopped at its first step as
    "Training diverged ... Lower the learning rate (--lr, now 0.16)": no learning rate
    helps, since a batch's squared error is beyond float32."""
    from saeatlas.train import run as train_run

    cli, one_line = run_cli
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    x[:, 2] *= 1e19
    np.save(tmp_path / "a.npy", x)
    forbid(train_run._Run, "train_step")
    args = ["train", "--acts", tmp_path / "a.npy", "--out", tmp_path / "sae", "--seeds", "1"]
    r = cli(*args, "--d-sae", "8", "--k", "2", "--normalize", "none")
    one_line(r, "unit 2 of layer 'a' has a standard deviation of", "Use --normalize unit")
