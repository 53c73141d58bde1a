"""Twenty-first hostile sweep, training and the activation store's read side: each case
failed (a traceback, a wrong result or no word) before its fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from saeatlas.errors import ConfigError

#: A training of 20 steps (640 rows in batches of 32).
SHORT = ["--seeds", "1", "--d-sae", "8", "--k", "2", "--batch-size", "32", "--tokens", "640"]


def _npy(tmp_path, layers, seed=0):
    """``tmp_path/a.npy`` (200 x 10, units 0-4 ten times the others) and its layers.json."""
    x = np.random.default_rng(seed).normal(size=(200, 10)).astype(np.float32)
    x[:, :5] *= 10
    np.save(tmp_path / "a.npy", x)
    (tmp_path / "a.layers.json").write_text(json.dumps(layers))
    return tmp_path / "a.npy"


TWO = [{"name": "a", "start": 0, "stop": 5}, {"name": "b", "start": 5, "stop": 10}]
# the same array, its layers redrawn after the kill
REDRAWN = [{"name": "a", "start": 0, "stop": 3}, {"name": "c", "start": 3, "stop": 10}]
SWAPPED = [{"name": "b", "start": 0, "stop": 5}, {"name": "a", "start": 5, "stop": 10}]


@pytest.mark.parametrize("layers", [REDRAWN, SWAPPED], ids=["redrawn", "swapped"])
def test_a_resume_after_the_layer_map_changed_is_refused(
    tmp_path, run_cli, interrupt, checkpoint_flags, layers
):
    """A layers.json edited between a kill and `train --resume` (the rows, and so their
    digest, the same): the run went on with the other layer map (`--normalize layer`
    scaled each half by another layer's spread) and saved an SAE whose cfg.json named
    layers of the new map, without a word."""
    cli, one_line = run_cli
    acts = _npy(tmp_path, TWO)
    flags = [*checkpoint_flags, "--normalize", "layer"]
    file = interrupt(acts, tmp_path / "sae", *flags)
    before = file.read_bytes()
    (tmp_path / "a.layers.json").write_text(json.dumps(layers))
    r = cli("train", "--acts", acts, "--out", tmp_path / "sae", *flags, "--resume")
    one_line(r, "other settings (['store_layers'])", "[['a', 0, 5], ['b', 5, 10]] when the")
    assert file.read_bytes() == before and not (tmp_path / "sae" / "cfg.json").exists()


def test_a_complete_sae_of_another_layer_map_is_not_kept(tmp_path, run_cli):
    """`train --resume` kept a complete SAE trained before its layers.json was redrawn
    ("Kept the complete topk SAE"), which the next reader refused as an SAE of another
    store; `--resume --overwrite` trains it again."""
    cli, one_line = run_cli
    acts = _npy(tmp_path, TWO)
    args = ["train", "--acts", acts, "--out", tmp_path / "sae", *SHORT, "-q"]
    assert cli(*args).exit_code == 0
    weights = (tmp_path / "sae" / "sae_weights.safetensors").read_bytes()
    (tmp_path / "a.layers.json").write_text(json.dumps(REDRAWN))
    one_line(cli(*args, "--resume"), "its layers' columns were [['a', 0, 5], ['b', 5, 10]]")
    assert (tmp_path / "sae" / "sae_weights.safetensors").read_bytes() == weights
    r = cli(*args, "--resume", "--overwrite")
    assert r.exit_code == 0 and "Trained" in r.output, r.output
    meta = json.loads((tmp_path / "sae" / "cfg.json").read_text())["metadata"]
    assert meta["store_layers"] == [["a", 0, 3], ["c", 3, 10]]


def test_checkpoints_and_saes_that_do_not_record_their_layers_still_resume(
    tmp_path, run_cli, interrupt, checkpoint_flags
):
    """What saeatlas wrote before `store_layers` was recorded is resumed and kept as
    before (a checkpoint, and a complete SAE's cfg.json, without it)."""
    cli, _ = run_cli
    acts = _npy(tmp_path, TWO)
    file = interrupt(acts, tmp_path / "sae", *checkpoint_flags)
    state = torch.load(file, weights_only=True)
    del state["settings"]["store_layers"]
    torch.save(state, file)
    args = ["train", "--acts", acts, "--out", tmp_path / "sae", *checkpoint_flags, "--resume"]
    r = cli(*args)
    assert r.exit_code == 0 and "Trained" in r.output, r.output
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    del cfg["metadata"]["store_layers"]
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    r = cli(*args)
    assert r.exit_code == 0 and "Kept the complete" in r.output, r.output


@pytest.mark.parametrize("flag", ["--jumprelu-init-threshold", "--jumprelu-bandwidth"])
def test_jumprelu_settings_beyond_float32_are_refused(guarded, run_cli, flag):
    """`--jumprelu-init-threshold 1e39` is Inf in the float32 weights: the SAE was
    trained and saved (FVU 1.02, L0 0) and every reader then refused it as broken."""
    cli, one_line = run_cli
    out = guarded.root / "new"
    r = cli("train", "--acts", guarded.store, "--out", out, "--architecture", "jumprelu",
            *SHORT, flag, "1e39")  # fmt: skip
    one_line(r, f"{flag} must be in (0, 3.4e+38], got 1e+39.")
    assert not out.exists()


def test_a_checkpoint_interval_the_run_never_reaches_is_refused(guarded, run_cli):
    """`--checkpoint-every 20` of a 20-step run wrote no checkpoint, without a word: a
    kill lost the whole run, and `--resume` found "Nothing to resume"."""
    cli, one_line = run_cli
    out = guarded.root / "new"
    for every in ("20", "1000000"):
        r = cli("train", "--acts", guarded.store, "--out", out, *SHORT, "--checkpoint-every", every)
        one_line(r, f"`checkpoint_every` (--checkpoint-every) {int(every):,} is not fewer than")
    assert not out.exists()


def test_a_unit_of_subnormal_values_is_trained_as_a_constant(tmp_path, save_acts, run_cli):
    """A unit whose values are below float32's smallest normal number (GELU's tails):
    `--normalize unit` (the default) divided by its subnormal spread, and the training
    stopped as "diverged" at its first step (or with Inf weights once the scale was
    folded in), advising a lower learning rate. A store of such units alone is refused
    as constant."""
    cli, one_line = run_cli
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    x[:, 1] = rng.normal(size=300).astype(np.float32) * np.float32(1e-40)
    x[:, 2] = rng.integers(0, 2, 300) * np.float32(1.4e-45)
    acts = save_acts(x)
    for mode in ("unit", "layer"):
        out = tmp_path / f"sae-{mode}"
        r = cli("train", "--acts", acts, "--out", out, *SHORT, "--normalize", mode, "-q")
        assert r.exit_code == 0, r.output
    acts = save_acts(x[:, 1:3].copy())
    r = cli("train", "--acts", acts, "--out", tmp_path / "sae", *SHORT, "-q")
    one_line(r, "is constant (or varies by less than float32's smallest normal number")


@pytest.mark.parametrize("flag", ["shuffle", "drop_last", "reuse_memory"])
def test_iter_batches_refuses_flags_that_are_not_true_or_false(outputs, flag):
    """`iter_batches(4, shuffle="no")` shuffled (read by its truth)."""
    from saeatlas.store import ActivationStore

    store = ActivationStore.open(outputs.store)
    with pytest.raises(ConfigError, match=f"`{flag}` must be True or False, got 'no'"):
        next(store.iter_batches(4, **{flag: "no"}))


def test_a_layers_json_key_that_a_layer_does_not_have_is_refused(tmp_path, run_cli):
    """A misspelt `layout` ("layuot": "head") in a .npy's layers.json was dropped without
    a word: the layer was read as one row per sample."""
    cli, one_line = run_cli
    layers = [{**TWO[0], "shape": [None, 1, 5, 1], "layuot": "head"}, TWO[1]]
    acts = _npy(tmp_path, layers)
    r = cli("train", "--acts", acts, "--out", tmp_path / "sae", *SHORT, "-q")
    one_line(r, "has the key(s) ['layuot'], which a layer entry does not have; its keys are")
    assert not (tmp_path / "sae").exists()


def test_an_ensemble_given_its_layers_as_a_list_resumes_from_python(tmp_path, outputs):
    """`TrainConfig(layers=["1"])` kept the list, so the config differed from its own
    record (a tuple) and `train_ensemble(resume=True)` refused the SAEs it had finished
    as "not trained with these settings"."""
    from saeatlas.train import TrainConfig, train_ensemble

    cfg = TrainConfig(layers=["1"], d_sae=8, k=2, batch_size=32, tokens=320)
    assert cfg == TrainConfig(layers=("1",), d_sae=8, k=2, batch_size=32, tokens=320)
    train_ensemble(outputs.store, cfg, tmp_path / "sae", n_seeds=2, progress=False)
    again = train_ensemble(
        outputs.store, cfg, tmp_path / "sae", n_seeds=2, progress=False, resume=True
    )
    assert again.trained == (False, False)


@pytest.mark.parametrize("layers", ["ab", {"a": 1}, 5])
def test_train_config_from_json_refuses_layers_that_are_no_list(layers):
    """`TrainConfig.from_json({"layers": "ab"})` read the layers 'a' and 'b' (a dict was
    read as its keys, and a number ended in a TypeError)."""
    from saeatlas.train import TrainConfig

    with pytest.raises(ConfigError, match=r"`layers` must be tuple\[str, \.\.\.\]"):
        TrainConfig.from_json({"layers": layers})


def test_an_output_that_goes_up_out_of_a_missing_folder_is_refused_before_the_work(
    guarded, run_cli, forbid, tmp_path
):
    """`train --out DIR/missing/..` trained to the end and then failed on its last rename
    ("Cannot write or read '.DIR.partial'", advising a --resume with nothing to resume);
    `capture` likewise after the whole capture."""
    import saeatlas.train.trainer as trainer

    cli, one_line = run_cli
    forbid(trainer, "_train")
    out = tmp_path / "missing" / ".." / "sae"
    r = cli("train", "--acts", guarded.store, "--out", out, *SHORT, "-q")
    one_line(r, "goes up ('..') out of", "which is not a folder; give the folder it means")
    r = cli("capture", "--model", guarded.model, "--inputs", guarded.inputs, "--layers", "1",
            "--out", out, "-q")  # fmt: skip
    one_line(r, "goes up ('..') out of")
    assert list(tmp_path.iterdir()) == []


def test_fp16_autocast_does_not_tell_the_user_to_reorder_torch_calls(
    guarded, run_cli, tmp_path, recwarn
):
    """`--autocast fp16` (jumprelu) printed torch's "Detected call of `lr_scheduler.step()`
    before `optimizer.step()` ... you should call them in the opposite order": its
    gradient scaler skips a step whose gradients overflowed, as it is made to."""
    cli, _ = run_cli
    r = cli("train", "--acts", guarded.store, "--out", tmp_path / "sae", "--seeds", "1",
            "--d-sae", "16", "--tokens", "3000", "--architecture", "jumprelu",
            "--autocast", "fp16", "-q")  # fmt: skip
    assert r.exit_code == 0 and "lr_scheduler" not in r.output, r.output
    assert not [w for w in recwarn if "lr_scheduler" in str(w.message)]


def test_a_resumed_training_draws_each_step_once_in_tensorboard(
    tmp_path, outputs, run_cli, interrupt, checkpoint_flags
):
    """`train --tensorboard` killed after its checkpoint and resumed logged the steps
    between the checkpoint and the kill twice (rows 192 and 224 of a checkpoint at 160)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli, _ = run_cli
    flags = [*checkpoint_flags, "--tensorboard", "--log-every", "1"]
    interrupt(outputs.store, tmp_path / "sae", *flags)
    r = cli("train", "--acts", outputs.store, "--out", tmp_path / "sae", *flags, "--resume")
    assert r.exit_code == 0, r.output
    events = EventAccumulator(str(tmp_path / "sae" / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/fvu")]
    assert steps == list(range(32, 641, 32))


@pytest.mark.parametrize("content,needle", [(b"", "it is empty"), (b"x" * 64, "torch.save wrote")])
def test_a_checkpoint_torch_did_not_write_is_named_so(
    checkpointed, outputs, run_cli, checkpoint_flags, content, needle
):
    """An empty checkpoint.pt (or one of other bytes) was refused in torch's words:
    "mmap can only be used with files saved with `torch.save(_use_new_zipfile_
    serialization=True)`, please torch.save your checkpoint with this option"."""
    cli, one_line = run_cli
    file, _ = checkpointed
    file.write_bytes(content)
    r = cli("train", "--acts", outputs.store, "--out", file.parent, *checkpoint_flags, "--resume")
    line = one_line(r, needle, "Start again with --overwrite (without --resume).")
    assert "_use_new_zipfile_serialization" not in line and file.read_bytes() == content
