"""Seventeenth hostile sweep, training, sweep, CLI and config files half: long bad values
quoted whole."""

from __future__ import annotations


def test_a_long_bad_choice_is_quoted_cut_short(guarded, run_cli, tmp_path):
    """A setting of fixed choices given a long text (`architecture:` of 100,000 characters
    in a YAML config, a long `--layout`, `--device`, `--model-class` or `sweep --over`)
    and a layer pattern matching nothing (or a bad regex) were quoted whole: one line of
    100,000 characters, where other bad values are cut short."""
    cli, one_line = run_cli
    long = "x" * 100_000
    (tmp_path / "c.yaml").write_text(f"architecture: {long}\n")
    train = ["train", "--acts", guarded.store, "--out", guarded.root / "new", "-q"]
    capture = ["capture", "--model", guarded.model, "--inputs", guarded.inputs, "--layers", "1"]
    capture += ["--out", guarded.root / "new", "-q"]
    sweep = ["sweep", "--acts", guarded.store, "--out", guarded.root / "new", "--values", "2", "4"]
    for args, needle in (
        ((*train, "--config", tmp_path / "c.yaml"), "Unknown `architecture` 'xxx"),
        ((*train, "--device", long), "Unknown --device 'xxx"),
        ((*capture, "--layout", long), "Unknown `layout` 'xxx"),
        ((*capture, "--model-class", long), "Unknown --model-class 'xxx"),
        ((*capture, "--store-dtype", long), "Unknown `store_dtype` 'xxx"),
        ((*sweep, "--over", long), "Cannot sweep over 'xxx"),
        ((*capture[:6], "re:" + long, *capture[7:]), "matches layer pattern 're:xxx"),
        ((*capture[:6], "re:(" + long, *capture[7:]), "Bad regex in layer pattern 're:(xxx"),
    ):
        line = one_line(cli(*args), needle)
        assert len(line) < 400, line[:400]
    assert not (guarded.root / "new").exists()


def test_a_local_rank_that_is_no_gpu_of_this_machine_is_refused(monkeypatch):
    """Under `torchrun` on GPUs, `LOCAL_RANK=abc` (set by hand) ended in int()'s
    ValueError traceback and `LOCAL_RANK=-1` ran the rank on 'cuda:-1'; RANK and
    WORLD_SIZE were already checked this way."""
    import pytest
    import torch

    from saeatlas._world import World, rank_device
    from saeatlas.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_device("cuda", World(1, 2)) == "cuda:1"
    for value, needle in (
        ("abc", "LOCAL_RANK is 'abc', not a whole number"),
        ("-1", r"local rank -1\) would run on cuda:-1"),
        ("2", r"local rank 2\) would run on cuda:2, but this machine has 2 GPU"),
    ):
        monkeypatch.setenv("LOCAL_RANK", value)
        with pytest.raises(ConfigError, match=needle):
            rank_device("cuda", World(1, 2))


def test_a_run_setting_the_store_cannot_fit_stops_before_the_training(guarded, run_cli, tmp_path):
    """`analyze.label_column` naming a column the store's rows lack was refused by the
    analysis, after the sweep and the training (and `run --check` called the config
    valid); `train.layers` naming a layer the capture does not record was refused by the
    training as "Store ... has no layer 'nope'", not naming the setting. Both are now
    refused as soon as the store is there, by `--check` too."""
    import yaml

    cli, one_line = run_cli
    config = {
        "model": guarded.model, "inputs": str(guarded.inputs), "layers": ["1", "3"],
        "sweep": {"values": [2, 4], "seeds": 1}, "stability": {"n_seed_saes": 0},
        "train": {"d_sae": 24, "tokens": 512, "batch_size": 64},
        "analyze": {"label_column": "nope"}, "ablation": {"enabled": False},
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    label = "`analyze.label_column` 'nope' is not a column of the store's rows"
    one_line(cli("run", tmp_path / "run.yaml", "--check"), label)

    def stops_after_the_capture(needle: str) -> None:  # its stage line, then the error
        r = cli("run", tmp_path / "run.yaml", "--out", tmp_path / "run", "-q")
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert r.output.strip().splitlines()[-1].startswith(f"Error: {needle}"), r.output
        assert not (tmp_path / "run" / "sweep").exists()  # before the sweep and training

    stops_after_the_capture(label)
    del config["analyze"]
    config["train"]["layers"] = ["nope"]
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    stops_after_the_capture("`train.layers` names ['nope'], which the capture does not record")


ODD_INPUTS = """
def nothing():
    return None

def one_dict():
    import numpy as np
    return {"x": np.zeros((8, 6), "f4")}

def a_path():
    return "inputs.npy"
"""


def test_run_check_refuses_odd_inputs_as_the_run_does(guarded, run_cli, tmp_path):
    """An inputs function returning None ended `run --check` in "TypeError: 'NoneType'
    object is not iterable"; one returning a dict or a path was dry-run on its keys or
    characters and refused as "Inputs are texts but no tokenizer was given", where the
    run refuses each for what it is."""
    import yaml

    cli, one_line = run_cli
    (tmp_path / "odd.py").write_text(ODD_INPUTS)
    for name, needle in (
        ("nothing", "Unsupported inputs of type NoneType"),
        ("one_dict", "Inputs are one mapping (dict of x)"),
        ("a_path", "Inputs given as a path"),
    ):
        config = {"model": guarded.model, "inputs": f"odd.py:{name}", "layers": ["1"]}
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
        one_line(cli("run", tmp_path / "run.yaml", "--check"), needle)


def test_more_threads_than_cpus_is_refused(guarded, run_cli, tmp_path):
    """`threads: 100000` in a run config ended the run in a segmentation fault (exit code
    139, no word; OpenMP could not start the threads), and `threads: 2147483648` in
    torch's "ValueError: Overflow when unpacking long" traceback."""
    import os

    import yaml

    cli, one_line = run_cli
    for threads in (2**31, 100_000, (os.cpu_count() or 1) + 1):
        config = {"model": guarded.model, "inputs": str(guarded.inputs), "layers": ["1"]}
        (tmp_path / "run.yaml").write_text(yaml.safe_dump({**config, "threads": threads}))
        r = cli("run", tmp_path / "run.yaml", "--out", tmp_path / "run", "-q")
        one_line(r, f"`threads` is {threads:,}, more than the", "CPUs of this machine")
    assert not (tmp_path / "run").exists()


def test_demo_options_of_the_minilm_demo_are_refused_for_digits(run_cli, tmp_path, forbid):
    """`saeatlas demo --n-texts 5` (or `--max-length 5`, options of the MiniLM demo) ran
    the digits demo as if they were not given: they were dropped without a word."""
    import saeatlas.demo

    cli, one_line = run_cli
    forbid(saeatlas.demo, "run_demo")
    out = tmp_path / "demo"
    one_line(cli("demo", "--out", out, "--n-texts", "5"), "--n-texts applies to --model minilm")
    r = cli("demo", "--out", out, "--max-length", "5", "--n-texts", "3", "--quick")
    one_line(r, "--n-texts and --max-length apply to --model minilm only")
    assert not out.exists()


def test_seeds_beyond_the_seed_range_are_refused_before_the_work(guarded, run_cli, forbid):
    """`train --seeds 99999999999999999999` (beyond 64 bits) built a list of as many
    output folders and never ended, and `--seeds 3 --seed 2**63-2` was refused as
    "`seed` must be in [0, 9.22337e+18]" of a seed it never named."""
    import saeatlas.train.ensemble as ensemble

    cli, one_line = run_cli
    forbid(ensemble, "seed_sae_dir")  # refused before the members' folders are named
    train = ["train", "--acts", guarded.store, "--out", guarded.root / "new", "-q"]
    # `--seeds 1000000` trained a million SAEs in one pass (each one's weights held
    # at once) where `analyze --seeds` reads 100 at most
    for seeds in (10**20, 10**6, 101):
        r = cli(*train, "--seeds", str(seeds))
        one_line(r, "--seeds (`n_seeds`) must be at most 100 (the SAEs `analyze --seeds` reads")
    r = cli(*train, "--seeds", "3", "--seed", str(2**63 - 2))
    one_line(r, f"--seed {2**63 - 2} gives seeds beyond 2**63 - 1", "give at most 2.")
    assert not (guarded.root / "new").exists()


def test_a_warmup_longer_than_the_run_is_refused(guarded, run_cli):
    """`--lr-warmup-steps` beyond the run's steps trained an SAE whose learning rate never
    reached `lr` (FVU 0.65 where 0.21 is reached), and `--sparsity-warmup-steps` beyond
    them one whose L1 penalty never reached its coefficient, without a word."""
    cli, one_line = run_cli
    train = ["train", "--acts", guarded.store, "--out", guarded.root / "new", "--seeds", "1"]
    train += ["--tokens", "640", "--batch-size", "64", "-q"]  # 10 steps
    r = cli(*train, "--lr-warmup-steps", "11")
    one_line(r, "`lr_warmup_steps` (--lr-warmup-steps) 11 is more than the run's 10 steps")
    r = cli(*train, "--architecture", "relu", "--sparsity-warmup-steps", str(10**18))
    one_line(r, "`sparsity_warmup_steps` (--sparsity-warmup-steps) 1,000,000,000,000,000,000")
    assert not (guarded.root / "new").exists()


def test_a_bad_json_config_is_named_as_json(guarded, run_cli, tmp_path):
    """A `.json` config with a key given twice (or another syntax error) was refused as
    "is not valid YAML" (JSON is read by the YAML parser), naming a format the file is
    not in."""
    cli, one_line = run_cli
    train = ["train", "--acts", guarded.store, "--out", guarded.root / "new", "-q"]
    for text, needle in (('{"k": 2, "k": 3}', "the key 'k' is given twice"), ('{"k": [}', "")):
        (tmp_path / "c.json").write_text(text)
        one_line(
            cli(*train, "--config", tmp_path / "c.json"), "is not valid JSON at line 1", needle
        )
    (tmp_path / "run.json").write_text('{"model": "m.py:f", "layers": ["1"], "layers": ["2"]}')
    one_line(cli("run", tmp_path / "run.json", "--check"), "is not valid JSON", "'layers'")
