"""Twenty-fourth hostile sweep, training, the SAE's files and `evaluate`: each case
failed (a traceback, a wrong result or a misleading word) before its fix."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from saeatlas.errors import AtlasError
from saeatlas.sae import SAEConfig, SAEFileError, SparseAutoencoder


def _sae(architecture: str = "topk") -> SparseAutoencoder:
    cfg = SAEConfig(architecture=architecture, d_in=6, d_sae=8, k=2)
    return SparseAutoencoder(cfg, torch.Generator().manual_seed(0))


def test_save_refuses_what_no_reader_accepts(tmp_path):
    """`sae.save` wrote NaN weights and a metadata of keys 1 and "1" (a cfg.json holding
    one key twice) into SAEs that every reader then refused, and a NumPy number in the
    metadata ended it in json's TypeError."""
    broken = _sae()
    with torch.no_grad():
        broken.W_enc[0, 0] = float("nan")
    with pytest.raises(SAEFileError, match=r"The SAE to save to .*`W_enc` has 1 NaN/Inf"):
        broken.save(tmp_path / "nan")
    twice = _sae()
    twice.cfg = replace(twice.cfg, metadata={1: "a", "1": "b"})
    with pytest.raises(AtlasError, match="cannot be written as cfg.json: the key '1' is given"):
        twice.save(tmp_path / "twice")
    assert not any(tmp_path.iterdir())  # nothing written, no folder left
    numpy = _sae()
    numpy.cfg = replace(numpy.cfg, metadata={"rows": np.int64(3), "fvu": np.float32(0.5)})
    numpy.save(tmp_path / "numpy")
    back = SparseAutoencoder.load(tmp_path / "numpy")
    assert back.cfg.metadata == {"rows": 3, "fvu": 0.5}


def test_from_weights_and_the_constructor_check_their_arguments():
    """`from_weights` of a missing weight ended in a KeyError, of a NumPy array in a
    TypeError, of a threshold of another shape in torch's RuntimeError, and took NaN and
    integer weights; `SparseAutoencoder("cfg")` or a seed as `generator` ended in an
    AttributeError or torch's TypeError."""
    sae = _sae("jumprelu")
    good = sae.weights()
    cases = {
        "missing": ({k: v for k, v in good.items() if k != "W_enc"}, "`W_enc` is missing"),
        "numpy": (good | {"b_dec": good["b_dec"].numpy()}, "`b_dec` is a ndarray"),
        "threshold": (good | {"threshold": torch.ones(2)}, r"`threshold` is \(2,\)"),
        "nan": (good | {"b_enc": torch.full((8,), float("nan"))}, "`b_enc` has 8 NaN"),
        "integer": (good | {"W_dec": torch.zeros(8, 6, dtype=torch.long)}, "dtype int64"),
        "list": ([1], "must be a dict of tensors"),
    }
    for weights, needle in cases.values():
        with pytest.raises(SAEFileError, match=needle):
            SparseAutoencoder.from_weights(sae.cfg, weights)
    with pytest.raises(AtlasError, match="`cfg` must be a SAEConfig, got str"):
        SparseAutoencoder("cfg.json")
    with pytest.raises(AtlasError, match="`generator` must be a torch.Generator"):
        SparseAutoencoder(sae.cfg, generator=5)


def test_train_family_refuses_to_replace_an_sae_without_overwrite(tmp_path):
    """`train_family(store, configs, outs)` replaced a complete SAE at `outs` (and an
    interrupted training's checkpoint) without a word, where `train_sae` refuses it
    without `overwrite=True`."""
    from saeatlas.train import TrainConfig, train_family, train_sae

    np.save(tmp_path / "a.npy", np.random.default_rng(0).normal(size=(64, 6)).astype("f4"))
    cfg = TrainConfig(d_sae=8, k=2, batch_size=32, tokens=64)
    train_sae(tmp_path / "a.npy", cfg, tmp_path / "sae", progress=False)
    before = (tmp_path / "sae" / "sae_weights.safetensors").read_bytes()
    other = replace(cfg, seed=5)
    with pytest.raises(AtlasError, match="already holds an SAE"):
        train_family(tmp_path / "a.npy", [other], [tmp_path / "sae"], progress=False)
    assert (tmp_path / "sae" / "sae_weights.safetensors").read_bytes() == before
    outs = [tmp_path / "sae"]
    train_family(tmp_path / "a.npy", [other], outs, overwrite=True, progress=False)
    assert (tmp_path / "sae" / "sae_weights.safetensors").read_bytes() != before


def test_sweep_refuses_checkpoint_every_naming_the_flag(guarded, run_cli, tmp_path):
    """`sweep --checkpoint-every 5` was refused, once the store was open and the sweep's
    lock taken, as "Checkpoints are per run: train with train_sae to use
    `checkpoint_every`", a Python function the command line has not."""
    cli, one_line = run_cli
    args = ["--acts", guarded.store, "--out", tmp_path / "sw", "--values", "2", "3", "-q"]
    line = one_line(cli("sweep", *args, "--checkpoint-every", "5"), "--checkpoint-every")
    assert "does not apply to a sweep" in line and "train_sae" not in line


def test_a_penalty_beyond_float32_is_named_not_the_learning_rate(guarded, run_cli, tmp_path):
    """`--architecture jumprelu --l0-coefficient 1e38` stopped at its first step as
    "diverged ... Lower the learning rate (--lr, now 0.16)": its squared error was finite,
    but the coefficient times the L0 was beyond float32, which no learning rate helps."""
    cli, one_line = run_cli
    args = ["--acts", guarded.store, "--out", tmp_path / "sae", "--seeds", "1", "-q"]
    args += ["--d-sae", "8", "--tokens", "640", "--batch-size", "32"]
    r = cli("train", *args, "--architecture", "jumprelu", "--l0-coefficient", "1e38")
    line = one_line(r, "the term of `l0_coefficient` (--l0-coefficient, now 1e+38)")
    assert "Lower --l0-coefficient" in line and "learning rate (--lr" not in line


def _adam_step(state, value):
    for s in state["opt"]["state"].values():
        s["step"] = torch.tensor(value)


def _emptied(state):
    state["opt"]["state"] = {}


def _negative_moments(state):
    for s in state["opt"]["state"].values():
        s["exp_avg_sq"] = -1 - s["exp_avg_sq"]


def _integer_encoder(state):
    state["sae"]["W_enc"] = state["sae"]["W_enc"].long()


def _late_record(state):
    state["metrics"].append(dict(state["metrics"][-1], step=999))


def _scale(state, value):
    state["scaler"]["scale"] = value


@pytest.mark.parametrize("name", ["adam", "fp16"])
def test_a_checkpoint_whose_state_was_edited_is_refused(
    name, interrupt, outputs, checkpoint_flags, run_cli, tmp_path
):
    """A checkpoint edited by hand under its own settings was continued from without a
    word: an Adam `step` of 1000 (another bias correction), an optimiser state emptied
    (its moments started again), an integer `W_enc` (cast to whole numbers) and an fp16
    loss scale of 0 (every later step skipped) each trained another SAE, a `step` of -3
    ended in torch's "ComplexFloat can't be cast" traceback, negative second moments
    stopped the resume as "diverged", advising that same checkpoint, and a metrics record
    of step 999 was written into metrics.jsonl."""
    cli, one_line = run_cli
    cases = {
        "adam": [
            (lambda s: _adam_step(s, 1000.0), "`opt` step of parameter 0 is 1000, not 5"),
            (lambda s: _adam_step(s, -3.0), "`opt` step of parameter 0 is -3, not 5"),
            (_emptied, "`opt` holds no state of parameter 0 after 5 steps"),
            (_negative_moments, "`opt` exp_avg_sq of parameter 0 is below 0"),
            (_integer_encoder, "`sae.W_enc` is torch.int64, not torch.float32"),
            (_late_record, "`metrics` holds a record of step 999"),
        ],
        "fp16": [(lambda s: _scale(s, 0.0), "`scaler` scale is 0.0, not a number above 0")],
    }
    extra = {"adam": ["--optimizer", "adam"], "fp16": ["--architecture", "relu"]}
    extra["fp16"] += ["--autocast", "fp16", "--l1-coefficient", "0.5"]
    flags = [*checkpoint_flags, *extra[name]]
    file = interrupt(outputs.store, tmp_path / name, *flags)
    good = file.read_bytes()
    for edit, needle in cases[name]:
        state = torch.load(file, weights_only=True)
        edit(state)
        torch.save(state, file)
        r = cli("train", "--acts", outputs.store, "--out", file.parent, *flags, "--resume")
        one_line(r, "not a state it can continue from", needle)
        file.write_bytes(good)
    r = cli("train", "--acts", outputs.store, "--out", file.parent, *flags, "--resume")
    assert r.exit_code == 0, r.output  # the checkpoint as written resumes


def test_an_output_inside_one_being_written_is_refused(guarded, run_cli, tmp_path, another_writer):
    """`train --out SWEEP/mine` while that sweep ran (in `.SWEEP.partial`) trained and
    said "Saved to SWEEP/mine"; the sweep, once finished, replaced SWEEP whole and the SAE
    was gone. Only complete outputs were checked for what they hold."""
    cli, one_line = run_cli
    (tmp_path / ".sw.partial").mkdir()
    args = ["--acts", guarded.store, "--seeds", "1", "--d-sae", "8", "--k", "2", "-q"]
    with another_writer(tmp_path / "sw"):
        r = cli("train", *args, "--out", tmp_path / "sw" / "mine")
        one_line(r, f"is inside the output being written '{tmp_path / 'sw'}', which another thread")
    assert not (tmp_path / "sw").exists()


def test_density_histogram_checks_its_bins(tmp_path):
    """`EvalResult.density_histogram(bins=0)` (or 2.5, or 'x') ended in NumPy's errors,
    `bins=True` was read as 1, and `bins=10**9` asked for gigabytes of bins."""
    from saeatlas.evaluate import evaluate_sae

    np.save(tmp_path / "a.npy", np.random.default_rng(0).normal(size=(32, 6)).astype("f4"))
    result = evaluate_sae(_sae(), tmp_path / "a.npy")
    for bins, needle in [(0, ">= 1"), (2.5, "whole number"), ("x", "whole number")]:
        with pytest.raises(AtlasError, match=f"`bins` must be (a )?{needle}"):
            result.density_histogram(bins=bins)
    with pytest.raises(AtlasError, match="whole number, got True"):
        result.density_histogram(bins=True)
    with pytest.raises(AtlasError, match=r"in \[1, 1000\]"):
        result.density_histogram(bins=10**9)
    assert len(result.density_histogram(bins=5)[0]) == 5


def test_a_sweep_given_where_an_sae_goes_names_its_members(run_cli, tmp_path):
    """`evaluate --sae SWEEP` was told "Train one with `saeatlas train`, or import a
    SAELens directory", and `--sae SWEEP/k-2` that its seed SAEs were "one per layer or
    hook"."""
    from saeatlas.sweep.sweep import PARETO_JSON, SWEEP_JSON

    cli, one_line = run_cli
    sweep = tmp_path / "sw"
    for seed in ("seed-0", "seed-1"):
        _sae().save(sweep / "k-2" / seed)
    (sweep / SWEEP_JSON).write_text("{}")
    (sweep / PARETO_JSON).write_text("{}")
    np.save(tmp_path / "a.npy", np.zeros((8, 6), dtype="f4"))
    r = cli("evaluate", "--sae", sweep, "--acts", tmp_path / "a.npy")
    line = one_line(r, "It is a sweep (sweep.json)", f"such as '{sweep / 'k-2' / 'seed-0'}'")
    assert "Train one" not in line
    r = cli("evaluate", "--sae", sweep / "k-2", "--acts", tmp_path / "a.npy")
    line = one_line(r, f"a member of the sweep '{sweep}', one SAE per seed (seed-0, seed-1)")
    assert "layer or hook" not in line


def test_a_family_member_whose_loss_is_infinite_stops_as_train_does(guarded, run_cli, tmp_path):
    """`train --seeds 2` (one pass over shared batches) and `sweep` trained a member of
    an infinite loss (`--l0-coefficient 1e38`) to its end and saved it, `"loss":
    Infinity` in its metrics.jsonl, where `--seeds 1` stops as diverged."""
    cli, one_line = run_cli
    args = ["--acts", guarded.store, "--d-sae", "8", "--tokens", "640", "--batch-size", "32"]
    args += ["--architecture", "jumprelu", "-q"]
    r = cli("train", *args, "--out", tmp_path / "sae", "--seeds", "2", "--l0-coefficient", "1e38")
    one_line(r, "Training diverged", "Lower --l0-coefficient")
    assert not (tmp_path / "sae").exists() and not (tmp_path / "sae-seed1").exists()
    sweep = ["--over", "l0_coefficient", "--values", "0.001", "1e38", "--seeds", "1"]
    r = cli("sweep", *args, "--out", tmp_path / "sw", *sweep, "--extend", "0")
    line = one_line(r, "Training diverged", "the term of `l0_coefficient` (--values, now 1e+38)")
    assert "--l0-coefficient" not in line and not (tmp_path / "sw").exists()


def test_save_writes_only_an_sae_s_files(tmp_path):
    """`sae.save(files={"cfg.json": b"{}"})` replaced the SAE's own cfg.json (an SAE no
    reader accepts), `files={"../x": ...}` wrote beside the SAE, another name a file
    that made the next save refuse the folder as not an SAE's, `keep=("cfg.json",)` put
    the old cfg.json over the new one, and text ended in a TypeError."""
    sae = _sae()
    for files, keep, needle in [
        ({"cfg.json": b"{}"}, (), "got 'cfg.json'"),
        ({"../x": b"x"}, (), "got '../x'"),
        ({"notes.txt": b"x"}, (), "got 'notes.txt'"),
        ({}, ("cfg.json",), "got 'cfg.json'"),
        ({"metrics.jsonl": "{}"}, (), r"`files\['metrics.jsonl'\]` must be bytes"),
    ]:
        with pytest.raises(AtlasError, match=needle):
            sae.save(tmp_path / "sae", files=files, keep=keep)
    assert not any(tmp_path.iterdir())
    sae.save(tmp_path / "sae", files={"metrics.jsonl": b"{}\n"})
    assert sorted(p.name for p in (tmp_path / "sae").iterdir())[0] == "cfg.json"
