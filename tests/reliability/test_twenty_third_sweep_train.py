"""Twenty-third hostile sweep, training, the SAE's files and `evaluate`: each case
failed (a traceback, a wrong result or a misleading word) before its fix."""

from __future__ import annotations

import json
import os

import numpy as np
import torch


class _Stop(Exception):
    """Stands for a kill: every rank stops at the same step, so the group stays whole."""


def _ranks_with_their_own_out(rank, world, port, root):
    """Rank 1 given another --out than rank 0's; then both ranks resuming from the
    'sae' of their own folder, which holds a checkpoint of another step on each."""
    from spawned_ranks import join_gloo

    join_gloo(rank, world, port)
    from dataclasses import replace

    import saeatlas.train.trainer as trainer
    from saeatlas.train import TrainConfig, train_sae

    cfg = TrainConfig(d_sae=8, k=2, batch_size=32, tokens=640, checkpoint_every=2, log_every=1)
    acts = root / "a.npy"
    results = {}
    try:
        train_sae(acts, cfg, root / f"out{rank}", progress=False)
        results["out"] = "no error"
    except Exception as e:
        results["out"] = f"{type(e).__name__}: {e}"
    from saeatlas.sweep import sweep

    try:
        sweep(acts, replace(cfg, checkpoint_every=0), "k", [2, 4], root / f"sw{rank}")
        results["sweep"] = "no error"
    except Exception as e:
        results["sweep"] = f"{type(e).__name__}: {e}"
    check = trainer.check_finite_training

    def stop_at(step):
        def stopping(run, step_out, out):
            check(run, step_out, out)
            if run.step == step:  # after the checkpoint of step - 2
                raise _Stop

        return stopping

    for folder, step in ((root / "r0", 4), (root / "r1", 6)):  # checkpoints of steps 2, 4
        trainer.check_finite_training = stop_at(step)
        try:
            train_sae(acts, cfg, folder / "sae", progress=False)
        except _Stop:
            pass
    trainer.check_finite_training = check
    os.chdir(root / f"r{rank}")  # --out sae: the same words, another folder on each rank
    try:
        train_sae(acts, cfg, "sae", progress=False, resume=True)
        results["resume"] = "no error"
    except Exception as e:
        results["resume"] = f"{type(e).__name__}: {e}"
    (root / f"r{rank}.json").write_text(json.dumps(results))
    torch.distributed.destroy_process_group()


def test_ranks_given_another_out_or_another_checkpoint_are_refused(tmp_path, spawn_ranks):
    """Under torchrun every rank resumed from the checkpoint in its own --out: a rank
    given another one (or finding another checkpoint there) trained from another state,
    and rank 0 saved the mix as a complete SAE (W_enc's sum -2.15 where an uninterrupted
    run's is -0.56), which the next --resume kept. Another --out without --resume (of
    `train` or `sweep`) was dropped without a word."""
    x = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    spawn_ranks(_ranks_with_their_own_out, (tmp_path,), 120)
    results = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2)]
    refused = {
        "out": "ConfigError: The ranks of this training were given different --out",
        "sweep": "ConfigError: The ranks of this sweep were given different --out",
        "resume": "ConfigError: The ranks of this training were given different checkpoints",
    }
    assert all(r[call].startswith(line) for r in results for call, line in refused.items()), results
    assert not [p for p in os.listdir(tmp_path) if p.startswith(("out", "sw", ".sw"))]
    for r in range(2):  # each checkpoint is left as it was, nothing saved
        assert sorted(os.listdir(tmp_path / f"r{r}" / "sae")) == ["checkpoint.pt"]


def test_help_keeps_its_brackets(run_cli, monkeypatch):
    """Rich read every `[...]` of an option's help as markup and dropped it: the
    "[config: k; default: 32]" after each setting, `pip install "saeatlas[tensorboard]"`
    printed as `pip install "saeatlas"`, and "'image' [batch, C, H, W]" as "'image' ,"."""
    cli, _ = run_cli
    monkeypatch.setenv("COLUMNS", "400")  # one line per option
    train = " ".join(cli("train", "--help").output.split())
    assert "[config: k; default: 32]" in train and '"saeatlas[tensorboard]"' in train, train
    capture = " ".join(cli("capture", "--help").output.split())
    assert "'image' [batch, C, H, W]" in capture and "[n, seq]" in capture, capture


def _rows(tmp_path, name="a.npy", rows=300):
    x = np.random.default_rng(0).normal(size=(rows, 6)).astype(np.float32)
    np.save(tmp_path / name, x)
    return tmp_path / name


def test_an_sae_that_fires_no_latent_is_told_of_its_sparsity(tmp_path, caplog):
    """`train --architecture relu --l1-coefficient 1000` ended with no latent firing
    (L0 0) and was told to train longer or check the learning rate and the
    normalisation, none of which changes that; the penalty silenced every latent."""
    from saeatlas.train import TrainConfig, train_sae

    cfg = TrainConfig(
        architecture="relu", d_sae=8, l1_coefficient=1000.0, batch_size=32, tokens=640
    )
    with caplog.at_level("WARNING", logger="saeatlas"):
        result = train_sae(_rows(tmp_path), cfg, progress=False)
    assert result.summary["final"]["l0"] == 0
    assert "fires no latent on its last batch" in caplog.text, caplog.text
    assert "`l1_coefficient` 1000" in caplog.text and "Train longer" not in caplog.text


def test_a_jumprelu_threshold_above_every_pre_activation_is_refused(guarded, run_cli, tmp_path):
    """`--jumprelu-init-threshold 10` on standardised units trained to the end an SAE in
    which no latent ever fired (the encoder gets no gradient, the threshold only within
    half the bandwidth of a pre-activation), and saved it."""
    cli, one_line = run_cli
    line = one_line(
        cli(
            "train", "--acts", guarded.store, "--out", tmp_path / "sae", "--seeds", "1",
            "--architecture", "jumprelu", "--d-sae", "8", "--jumprelu-init-threshold", "10",
        ),
        "`jumprelu_init_threshold` (--jumprelu-init-threshold) 10 is above every "
        "pre-activation of the first 300 rows",
    )  # fmt: skip
    assert "no latent would fire" in line
    assert not (tmp_path / "sae").exists()


def _edited_sae(outputs, tmp_path, edit):
    """A copy of the protected SAE whose first cfg.json layer entry ``edit`` changed."""
    import shutil

    sae = tmp_path / "sae"
    shutil.copytree(outputs.sae, sae)
    cfg = json.loads((sae / "cfg.json").read_text())
    edit(cfg["layers"][0])
    (sae / "cfg.json").write_text(json.dumps(cfg))
    return sae


def test_a_cfg_json_layer_entry_is_read_as_a_layers_json_one(outputs, tmp_path, run_cli):
    """An SAE's cfg.json layer entry with a misspelt key ("layuot": "head") was read
    without it (the twenty-first sweep refused it in a .npy's layers.json, not in
    cfg.json nor manifest.json), and one whose `shape` does not hold its columns
    ([None, 5] of 10 units) was read as it stood."""
    cli, one_line = run_cli
    sae = _edited_sae(outputs, tmp_path / "a", lambda e: e.update(layuot="head"))
    one_line(
        cli("evaluate", "--sae", sae, "--acts", outputs.store),
        "is not a valid SAE config", "has the key(s) ['layuot'], which a layer entry does not",
    )  # fmt: skip
    sae = _edited_sae(outputs, tmp_path / "b", lambda e: e.update(shape=[None, 5]))
    one_line(
        cli("evaluate", "--sae", sae, "--acts", outputs.store),
        "Layer '1' has columns 0:10 (10 units) but its `shape` [None, 5] does not have that many",
    )
    store = tmp_path / "store"
    import shutil

    shutil.copytree(outputs.store, store)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["layers"][1]["layuot"] = "head"
    (store / "manifest.json").write_text(json.dumps(manifest))
    one_line(cli("info", store), "has the key(s) ['layuot']")


def test_a_unit_held_at_1e30_is_refused_without_normalisation(tmp_path, run_cli):
    """`--normalize none` on a store whose one unit is held at 1e30 (constant, so its
    standard deviation is 0 and the twenty-second sweep's check passed) logged a loss
    and an FVU of 0 at every step and saved the SAE it started from ("FVU 0.0000";
    `evaluate` measures 0.54): float32's rounding of a batch's mean of 1e30 squared to
    Inf, and the loss divided by it was 0."""
    cli, one_line = run_cli
    x = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    x[:, 0] = 1e30
    np.save(tmp_path / "a.npy", x)
    args = ["--d-sae", "8", "--k", "2", "--batch-size", "32", "--tokens", "640", "-q"]
    one_line(
        cli("train", "--acts", tmp_path / "a.npy", "--out", tmp_path / "sae", "--seeds", "1",
            "--normalize", "none", *args),
        "unit 0 of layer 'a' has a standard deviation of 0 (and a mean of 1e+30)",
        "Use --normalize unit or layer",
    )  # fmt: skip
    assert not (tmp_path / "sae").exists()


def _trained(tmp_path, cli):
    """`train` of 640 rows into tmp_path/sae (one seed); its arguments and its cfg.json."""
    args = ["train", "--acts", _rows(tmp_path), "--out", tmp_path / "sae", "--seeds", "1",
            "--d-sae", "8", "--k", "2", "--batch-size", "32", "--tokens", "640", "-q"]  # fmt: skip
    assert cli(*args).exit_code == 0
    return args, tmp_path / "sae" / "cfg.json"


def test_a_kept_sae_whose_final_figures_were_edited_is_refused(tmp_path, run_cli):
    """`train --resume` kept a complete SAE whose cfg.json `metadata.final` was emptied,
    made a text or given an FVU of "x", and ended, after training the rest, in a KeyError
    or TypeError traceback printing it (a `metadata.tokens` removed printed "dead 0.0%"
    of a run too short to measure any)."""
    cli, one_line = run_cli
    args, cfg_file = _trained(tmp_path, cli)
    good = cfg_file.read_text()
    for edit, words in (
        (lambda m: m.update(final={}), "records the final figures of its training"),
        (lambda m: m["final"].update(fvu="x"), "not the numbers ['fvu', 'l0', 'dead_fraction']"),
        (lambda m: m.pop("tokens"), "records the rows it was trained on (`metadata.tokens`)"),
    ):
        cfg = json.loads(good)
        edit(cfg["metadata"])
        cfg_file.write_text(json.dumps(cfg))
        one_line(cli(*args, "--resume"), "holds a complete SAE whose files are damaged", words)
    r = cli(*args, "--resume", "--overwrite")
    assert r.exit_code == 0 and "Trained a topk SAE" in r.output, r.output


def test_a_kept_sae_whose_b_dec_rule_or_dtype_was_edited_is_refused(tmp_path, run_cli):
    """`train --resume` kept a complete TopK SAE whose cfg.json `apply_b_dec_to_input`
    was edited to false (or `dtype` to bfloat16) as the SAE its training made: every
    reader then encoded it otherwise (`evaluate` FVU 0.405 where the SAE trained has
    0.392). The twenty-second sweep compared `k` and the penalties alone."""
    cli, one_line = run_cli
    args, cfg_file = _trained(tmp_path, cli)
    good = cfg_file.read_text()
    for key, value, words in (
        ("apply_b_dec_to_input", False, "(`apply_b_dec_to_input` False in its cfg.json, True"),
        ("dtype", "bfloat16", "(`dtype` 'bfloat16' in its cfg.json, 'float32' in its training)"),
    ):
        cfg_file.write_text(json.dumps({**json.loads(good), key: value}))
        one_line(cli(*args, "--resume"), "is not the SAE its training made", words)


def test_compile_that_changes_nothing_is_warned_of(tmp_path, run_cli, caplog, monkeypatch):
    """`--compile` with topk trained the same SAE bit for bit as without it (TopK trains
    through its own sparse kernels, never through the compiled module), without a word,
    as `--autocast` did before the fourteenth sweep."""
    from safetensors.numpy import load_file

    monkeypatch.setattr(torch, "compile", lambda module: module)  # seconds of imports
    cli, _ = run_cli
    acts = _rows(tmp_path)
    base = ["train", "--acts", acts, "--d-sae", "8", "--k", "2", "--tokens", "320"]
    base += ["--batch-size", "32", "--seeds", "1", "-q"]
    weights = []
    for flag in ("", "--compile"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="saeatlas.cli.sae"):
            r = cli(*base, *[flag][: bool(flag)], "--out", tmp_path / f"sae{flag}")
        assert r.exit_code == 0, r.output
        warned = "`compile` is read only with architecture relu or jumprelu or batchtopk"
        assert (warned in caplog.text) == (flag == "--compile"), caplog.text
        weights.append(load_file(tmp_path / f"sae{flag}" / "sae_weights.safetensors")["W_enc"])
    assert (weights[0] == weights[1]).all()


def test_a_gradient_clip_or_learning_rate_that_is_0_in_float32_is_refused(
    guarded, run_cli, tmp_path
):
    """`--grad-clip 1e-46` (0 turns clipping off) is 0 in float32: every gradient was
    clipped to 0 and the run saved the SAE it started from (FVU 0.62 where clipping at 1
    trains it to 0.32), without a word, as `--l1-coefficient 1e-320` trained without a
    penalty before the twenty-first sweep; `--lr 1e-46` took steps of 0 alike."""
    cli, one_line = run_cli
    for flag, fix in (("--grad-clip", "give 0 or at least 1.4e-45"), ("--lr", "at least 1.4e-45")):
        one_line(
            cli("train", "--acts", guarded.store, "--out", tmp_path / "sae", flag, "1e-46"),
            f"{flag} (1e-46) is 0 in float32", fix,
        )  # fmt: skip
    assert not (tmp_path / "sae").exists()


def test_an_overwritten_sae_keeps_no_tensorboard_events_of_the_one_it_replaced(tmp_path, run_cli):
    """`train --overwrite` without --tensorboard moved the TensorBoard events of the
    training it replaced (another d_sae, other settings) into the new SAE's directory,
    where `tensorboard --logdir SAE` showed them as its own."""
    cli, _ = run_cli
    args = ["train", "--acts", _rows(tmp_path), "--out", tmp_path / "sae", "--seeds", "1",
            "--k", "2", "--batch-size", "32", "--tokens", "320", "-q"]  # fmt: skip
    assert cli(*args, "--d-sae", "8").exit_code == 0
    events = tmp_path / "sae" / "tensorboard"  # as a --tensorboard training leaves them
    events.mkdir()
    (events / "events.out.tfevents.1.host.1.0").write_bytes(b"another run")
    r = cli(*args, "--d-sae", "16", "--overwrite")
    assert r.exit_code == 0 and "(6 -> 16)" in r.output, r.output
    assert sorted(os.listdir(tmp_path / "sae")) == [
        "cfg.json", "metrics.jsonl", "sae_weights.safetensors"
    ]  # fmt: skip


def test_an_sae_of_a_renamed_npy_is_told_why_it_reads_no_layer(tmp_path, run_cli):
    """An SAE trained on 'a.npy' (no layers.json: its one layer is named 'a') was told
    "Was the SAE trained on another store?" of the same rows saved as 'b.npy', whose
    layer is named 'b'."""
    import shutil

    cli, one_line = run_cli
    args = ["--seeds", "1", "--d-sae", "8", "--k", "2", "--batch-size", "32", "--tokens", "320"]
    acts = _rows(tmp_path)
    assert cli("train", "--acts", acts, "--out", tmp_path / "sae", *args, "-q").exit_code == 0
    shutil.copy(acts, tmp_path / "b.npy")
    line = one_line(
        cli("evaluate", "--sae", tmp_path / "sae", "--acts", tmp_path / "b.npy"),
        "A .npy without a layers.json holds one layer named after its file: was 'b.npy' named "
        "'a.npy' when the SAE was trained?",
    )
    assert '[{"name": "a", "start": 0, "stop": 6}]' in line and "another store" not in line


def test_a_model_class_without_a_model_is_refused(guarded, run_cli, tmp_path):
    """`evaluate --model-class causal-lm` (`analyze` and `export-neuronpedia` alike) without
    --model printed the metrics without a word of it, where --loss without --model is
    refused."""
    cli, one_line = run_cli
    one_line(
        cli(
            "evaluate", "--sae", guarded.sae, "--acts", guarded.store, "--model-class", "causal-lm"
        ),
        "--model-class is for the downstream loss; give --model and --inputs too.",
    )
    one_line(
        cli("analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "atlas",
            "--model-class", "base"),
        "--model-class is for the ablation; give --model and --inputs too.",
    )  # fmt: skip
    assert not (tmp_path / "atlas").exists()
    one_line(
        cli("export-neuronpedia", guarded.atlas, "--out", tmp_path / "np", "--model-class", "base"),
        "--model-class is for the features' logits; give --model too.",
    )
    assert not (tmp_path / "np").exists()


def test_a_checkpoint_whose_world_size_was_edited_is_called_damaged(tmp_path, run_cli):
    """A checkpoint whose `world_size` was edited to the text '1' was refused as "written by
    a training on 1 processes; this one runs on 1 process", naming no fault."""
    import saeatlas.train.trainer as trainer

    cli, one_line = run_cli
    args = ["train", "--acts", _rows(tmp_path), "--out", tmp_path / "sae", "--seeds", "1",
            "--d-sae", "8", "--k", "2", "--batch-size", "32", "--tokens", "320",
            "--checkpoint-every", "2", "-q"]  # fmt: skip
    check = trainer.check_finite_training

    def stop_at_4(run, step_out, out):  # a kill after the checkpoint of step 2
        check(run, step_out, out)
        if run.step == 4:
            raise KeyboardInterrupt

    trainer.check_finite_training = stop_at_4
    try:
        cli(*args)
    finally:
        trainer.check_finite_training = check
    file = tmp_path / "sae" / "checkpoint.pt"
    state = torch.load(file, weights_only=True)
    state["settings"]["world_size"] = "1"
    torch.save(state, file)
    one_line(
        cli(*args, "--resume"),
        "records `world_size` '1', not a number of processes: it is damaged",
    )
