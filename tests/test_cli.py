"""The CLI through typer's test runner."""

import json
import re
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from saeatlas.cli import _expand_multi_value, app

runner = CliRunner()

MODEL_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 2))

    def not_a_model():
        return 42
    """
)


@pytest.fixture
def spec(tmp_path):
    f = tmp_path / "mymodel.py"
    f.write_text(MODEL_FILE)
    return f"{f}:build"


@pytest.fixture
def inputs(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32))
    return p


def test_layers_lists_shapes(spec):
    result = runner.invoke(app, ["layers", spec])
    assert result.exit_code == 0, result.output
    assert "[2, 7]" in result.output and "Linear" in result.output and "ReLU" in result.output


def test_capture_and_info(tmp_path, spec, inputs):
    labels = tmp_path / "y.npy"
    np.save(labels, np.arange(40) % 2)
    out = tmp_path / "store"
    args = [
        "capture",
        "--model",
        spec,
        "--inputs",
        str(inputs),
        "--layers",
        "1",
        "3",
        "--out",
        str(out),
        "--labels",
        str(labels),
        "--batch-size",
        "16",
        "-q",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [l["name"] for l in manifest["layers"]] == ["1", "3"] and manifest["n_rows"] == 40
    assert "40 rows x 13 units" in result.output
    result = runner.invoke(app, ["info", str(out), "--verify"])
    assert result.exit_code == 0, result.output
    assert "match their sha256" in result.output
    # the same command again refuses to overwrite the finished store
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "already holds a complete store" in result.output


def test_wrong_layer_name_is_one_line_with_suggestion(tmp_path, spec, inputs):
    args = [
        "capture",
        "--model",
        spec,
        "--inputs",
        str(inputs),
        "--layers",
        "11",
        "--out",
        str(tmp_path / "s"),
        "-q",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "Did you mean '1'" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "s" / "manifest.json").exists()
    debug = runner.invoke(app, ["--debug", *args])
    assert debug.exit_code == 1 and type(debug.exception).__name__ == "HookpointError"


def test_bad_model_spec_and_bad_option(tmp_path, spec, inputs):
    result = runner.invoke(app, ["layers", spec.replace(":build", ":not_a_model")])
    assert result.exit_code == 1 and "must return a torch.nn.Module" in result.output
    result = runner.invoke(app, ["layers", "nomodule"])
    assert result.exit_code == 1 and "package.module:factory" in result.output
    result = runner.invoke(
        app,
        [
            "capture",
            "--model",
            spec,
            "--inputs",
            str(inputs),
            "--layers",
            "1",
            "--out",
            str(tmp_path / "s"),
            "--spatial",
            "avg",
        ],
    )
    assert result.exit_code == 1 and "`spatial`" in result.output


def test_info_on_npy_and_missing_store(tmp_path, inputs):
    result = runner.invoke(app, ["info", str(inputs)])
    assert result.exit_code == 0 and "40 rows x 5 units" in result.output
    result = runner.invoke(app, ["info", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "No activation store" in result.output


def test_error_messages_keep_their_brackets(tmp_path):
    # rich would read "[rows, units]" as markup and print "must be ."
    np.save(tmp_path / "x.npy", np.zeros((4, 2, 3), np.float32))
    result = runner.invoke(app, ["info", str(tmp_path / "x.npy")])
    assert result.exit_code == 1 and "must be [rows, units]" in result.output, result.output


def test_info_shows_layers_json_shapes(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((4, 6), np.float32))
    (tmp_path / "x.layers.json").write_text(
        json.dumps([{"name": "a", "start": 0, "stop": 2}, {"name": "b", "start": 2, "stop": 6}])
    )
    result = runner.invoke(app, ["info", str(tmp_path / "x.npy")])
    assert result.exit_code == 0, result.output
    assert "[None, 2]" in result.output and "[None, 4]" in result.output, result.output


def test_paths_and_layer_names_keep_their_brackets(tmp_path):
    # rich would read "[mlp]" or "[run]" as markup and drop it
    run = tmp_path / "[run]"
    run.mkdir()
    np.save(run / "x.npy", np.ones((4, 6), np.float32))
    (run / "layers.json").write_text(
        json.dumps(
            [{"name": "h[attn]", "start": 0, "stop": 2}, {"name": "h[mlp]", "start": 2, "stop": 6}]
        )
    )
    result = runner.invoke(app, ["info", str(run / "x.npy")])
    assert result.exit_code == 0, result.output
    assert "[run]" in result.output and "h[mlp]" in result.output, result.output
    (run / "m.py").write_text(
        "import torch\ndef f():\n    return torch.nn.Sequential(torch.nn.Linear(6, 3))\n"
    )
    (run / "run.yaml").write_text("model: m.py:f\ninputs: x.npy\nlayers: ['h[mlp]']\n")
    # --check's dry run finds that no module matches, and says so with the brackets
    result = runner.invoke(app, ["run", str(run / "run.yaml"), "--check"])
    assert result.exit_code == 1, result.output
    assert "'h[mlp]'" in result.output and len(result.output.strip().splitlines()) == 1, (
        result.output
    )


def test_config_files_are_validated_like_run_configs(tmp_path, inputs):
    def train(text):
        (tmp_path / "c.yaml").write_text(text)
        args = ["train", "--acts", str(inputs), "--out", str(tmp_path / "sae")]
        return runner.invoke(app, [*args, "--config", str(tmp_path / "c.yaml"), "-q"])

    result = train("k: four\n")  # was a TypeError traceback
    assert result.exit_code == 1 and "`k` must be an integer, got 'four'" in result.output
    result = train("d_sea: 8\n")
    assert result.exit_code == 1 and "Did you mean `d_sae`?" in result.output
    result = train("layers: x\n")  # was split into the layer names 'x'... letter by letter
    assert result.exit_code == 1 and "`layers` must be a list of text" in result.output
    # a `saeatlas run` config gives its `train` section
    result = train("model: m:f\ntrain: {k: 2, d_sae: 8, batch_size: 8, tokens: 80}\n")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "sae" / "cfg.json").read_text())["k"] == 2


def test_text_inputs_need_a_tokenizer(tmp_path, spec):
    texts = tmp_path / "t.txt"
    texts.write_text("one\ntwo\n")
    result = runner.invoke(
        app,
        [
            "capture",
            "--model",
            spec,
            "--inputs",
            str(texts),
            "--layers",
            "1",
            "--out",
            str(tmp_path / "s"),
            "-q",
        ],
    )
    assert result.exit_code == 1 and "no tokenizer" in result.output


def test_multi_value_option_expansion():
    assert _expand_multi_value(["capture", "--layers", "a", "b", "--out", "o"]) == [
        "capture",
        "--layers",
        "a",
        "--layers",
        "b",
        "--out",
        "o",
    ]


def test_train_and_evaluate_commands(tmp_path, digits_store):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("architecture: topk\nk: 4\nd_sae: 64\nbatch_size: 256\ntokens: 5000\n")
    out = tmp_path / "sae"
    args = [
        "train",
        "--acts",
        str(digits_store.path),
        "--out",
        str(out),
        "--config",
        str(cfg),
        "--k",
        "6",
        "--layers",
        "act1",
        "act3",
        "-q",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    # 5,000 rows never reach the default window of 1M rows: no latent can count as dead
    # (it said "dead 0.0%" where evaluate counted latents firing on no row)
    said = " ".join(result.output.split())
    assert "dead not measured (the run is shorter than --dead-window, 1,000,000 rows" in said
    saved = json.loads((out / "cfg.json").read_text())
    assert saved["k"] == 6 and saved["d_sae"] == 64  # the flag overrides the file
    short = runner.invoke(
        app, [*args[:4], str(tmp_path / "sae-w"), *args[5:], "--dead-window", "1000"]
    )
    assert short.exit_code == 0, short.output
    assert re.search(r"dead \d+\.\d%\.", " ".join(short.output.split())), short.output
    assert [l["name"] for l in saved["layers"]] == ["act1", "act3"] and saved["d_in"] == 96
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "already holds an SAE" in result.output
    result = runner.invoke(app, ["evaluate", "--sae", str(out), "--acts", str(digits_store.path)])
    assert result.exit_code == 0, result.output
    assert "fvu" in result.output and "dead_fraction" in result.output
    bad = runner.invoke(
        app,
        [
            "train",
            "--acts",
            str(digits_store.path),
            "--out",
            str(tmp_path / "b"),
            "--architecture",
            "gated",
        ],
    )
    assert bad.exit_code == 1 and "--architecture" in bad.output, bad.output


def test_saelens_import_and_export(tmp_path):
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "saelens" / "topk"
    result = runner.invoke(app, ["import-saelens", str(fixture), "--out", str(tmp_path / "ours")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ours" / "cfg.json").read_text())["architecture"] == "topk"
    result = runner.invoke(
        app, ["export-saelens", str(tmp_path / "ours"), "--out", str(tmp_path / "lens")]
    )
    assert result.exit_code == 0, result.output
    lens = json.loads((tmp_path / "lens" / "cfg.json").read_text())
    assert lens["architecture"] == "topk" and lens["k"] == 4 and "l0_coefficient" not in lens
    result = runner.invoke(
        app, ["import-saelens", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 1 and "not a readable SAELens" in result.output


def test_sweep_command(tmp_path, digits_store):
    result = runner.invoke(
        app,
        [
            "sweep",
            "--acts",
            str(digits_store.path),
            "--out",
            str(tmp_path / "sw"),
            "--values",
            "2",
            "8",
            "--seeds",
            "1",
            "--d-sae",
            "64",
            "--batch-size",
            "256",
            "--tokens",
            "3000",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "recommended" in result.output and (tmp_path / "sw" / "sweep.json").exists()
    # members are named as the Python API names them: k-2, never k-2.0 (the CLI's floats)
    names = {p.name for p in (tmp_path / "sw").glob("k-*")}
    assert {"k-2", "k-8"} <= names and all(n[2:].isdigit() for n in names), names


def test_evaluate_with_model_reports_loss_recovered(tmp_path, digits_store):
    from saeatlas.demo.digits import digits_data

    x, y = digits_data()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "sae"
    result = runner.invoke(
        app,
        [
            "train",
            "--acts",
            str(digits_store.path),
            "--out",
            str(out),
            "--d-sae",
            "128",
            "--k",
            "16",
            "--batch-size",
            "256",
            "--tokens",
            "20000",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--sae",
            str(out),
            "--acts",
            str(digits_store.path),
            "--model",
            "saeatlas.demo.digits:digits_model",
            "--inputs",
            str(tmp_path / "x.npy"),
            "--labels",
            str(tmp_path / "y.npy"),
        ],
    )
    assert result.exit_code == 0, result.output
    line = next(l for l in result.output.splitlines() if "fraction_recovered" in l)
    assert float(line.split()[-2]) > 0.5


def test_analyze_with_a_model_needs_labels_before_it_starts(tmp_path, spec, inputs):
    # checked up front, not after the whole analysis has run
    args = ["analyze", "--sae", str(tmp_path / "sae"), "--acts", str(inputs)]
    args += ["--out", str(tmp_path / "atlas"), "--model", spec, "--inputs", str(inputs)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "--model needs --labels FILE" in result.output, result.output


def test_train_seeds_writes_the_ensemble_that_analyze_reuses(tmp_path, digits_store, monkeypatch):
    out = tmp_path / "sae"
    args = ["train", "--acts", str(digits_store.path), "--out", str(out), "--seed", "4"]
    args += ["--d-sae", "64", "--k", "4", "--batch-size", "256", "--tokens", "5000", "-q"]
    zero = runner.invoke(app, [*args, "--seeds", "0"])
    assert zero.exit_code == 1 and "--seeds (`n_seeds`) must be at least 1" in zero.output
    assert not out.exists()
    result = runner.invoke(app, [*args, "--seeds", "3"])
    assert result.exit_code == 0, result.output
    dirs = [out, tmp_path / "sae-seed1", tmp_path / "sae-seed2"]
    lines = result.output.strip().splitlines()
    assert len(lines) == 3, result.output
    for seed, (line, d) in enumerate(zip(lines, dirs), start=4):
        assert f"with seed {seed} on" in line and f"Saved to {d}." in line, result.output
        assert "FVU" in line and "L0" in line, result.output
        saved = json.loads((d / "cfg.json").read_text())["metadata"]["train_config"]
        assert saved["seed"] == seed and saved["k"] == 4
    stamps = [(d / "sae_weights.safetensors").stat().st_mtime_ns for d in dirs]

    def no_training(*args, **kwargs):
        raise AssertionError("analyze trained an SAE that `train --seeds 3` had trained")

    import saeatlas.train as train

    for name in ("train_sae", "train_family", "train_ensemble"):
        monkeypatch.setattr(train, name, no_training)
    atlas = tmp_path / "atlas"
    analyze = ["analyze", "--sae", str(out), "--acts", str(digits_store.path), "--out", str(atlas)]
    result = runner.invoke(app, [*analyze, "--seeds", "3", "--n-null", "2", "-q"])
    assert result.exit_code == 0, result.output
    assert [(d / "sae_weights.safetensors").stat().st_mtime_ns for d in dirs] == stamps
    summary = json.loads((atlas / "atlas.json").read_text())
    assert summary["ensemble"]["n_saes"] == 3, summary["ensemble"]
    assert summary["dictionary_null_source"] == str(dirs[1])  # an ensemble member too


@pytest.mark.parametrize("rank, says", [("0", True), ("1", False)])
def test_commands_that_share_no_work_run_on_rank_zero_alone(
    tmp_path, inputs, monkeypatch, rank, says
):
    # what torchrun sets for each of two processes: rank 1 returns at once, writing nothing
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    for args in (
        ["info", str(inputs)],
        ["export-saelens", str(tmp_path / "none"), "--out", str(tmp_path / "o")],
    ):
        result = runner.invoke(app, args)
        if says:
            assert result.output.strip(), args
        else:
            assert result.exit_code == 0 and not result.output.strip(), (args, result.output)
    assert not (tmp_path / "o").exists()


def test_train_warns_of_settings_its_architecture_or_optimiser_does_not_read(
    tmp_path, digits_store, caplog
):
    """`--k` with relu, `--l1-coefficient` with topk or `--lr-decay` with signum were
    dropped without a word (a sweep over them is refused)."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text("l1_coefficient: 2.0\n")  # from the file too
    args = ["train", "--acts", str(digits_store.path), "--out", str(tmp_path / "sae")]
    args += ["--config", str(cfg), "--d-sae", "32", "--k", "4", "--tokens", "512"]
    args += ["--batch-size", "256", "--seeds", "1", "--lr-decay", "cosine", "-q"]
    with caplog.at_level("WARNING", logger="saeatlas.cli.sae"):
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    warned = [r.getMessage() for r in caplog.records]
    assert any(
        "`l1_coefficient` is read only with architecture relu, not topk" in w for w in warned
    )
    assert any("`lr_decay` is read only with optimizer adam, not signum" in w for w in warned)
    assert not any("`k`" in w for w in warned), warned  # topk reads k


def test_the_clis_own_warnings_are_one_line(capsys):
    """saeatlas's warnings were printed as Python shows them (path, line number,
    category); the script prints them as one 'Warning:' line, others as before."""
    import saeatlas.capture.inputs as inputs
    from saeatlas.cli.app import _show_warning

    _show_warning(UserWarning("3 texts were cut"), UserWarning, inputs.__file__, 10)
    assert capsys.readouterr().err == "Warning: 3 texts were cut\n"
    _show_warning(UserWarning("theirs"), UserWarning, "/elsewhere/lib.py", 7)
    assert capsys.readouterr().err.startswith("/elsewhere/lib.py:7: UserWarning: theirs")


def test_output_into_a_pipe_whose_reader_left_stops_quietly():
    """`saeatlas capture --help | head -30` printed "Cannot write or read: Broken pipe
    ... continue with `saeatlas capture --resume`": a reader that left is no disk error.
    Like `head`, the test reads 30 lines and closes the pipe while the command still
    has its last write to make."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    cmd = [sys.executable, "-m", "saeatlas", "capture", "--help"]
    proc = subprocess.Popen(cmd, stdout=write, stderr=subprocess.PIPE, text=True)
    os.close(write)
    got = b""
    while got.count(b"\n") < 30:
        chunk = os.read(read, 65536)
        if not chunk:
            break
        got += chunk
    os.close(read)
    err = proc.stderr.read()
    assert proc.wait(timeout=60) in (0, 1)
    assert "Error" not in err and "Traceback" not in err, err


def test_a_value_given_without_its_flag_is_named_with_the_flag_it_needs(tmp_path):
    """`saeatlas train STORE --out sae` (as sparsify and SAELens take a positional
    dataset) said only "Missing option '--acts'"."""
    x = tmp_path / "x.npy"
    np.save(x, np.ones((20, 3), np.float32))
    result = CliRunner().invoke(app, ["train", str(x), "--out", str(tmp_path / "sae")])
    assert result.exit_code != 0
    assert f"has no flag: write `--acts {x}`" in " ".join(result.output.split())
    assert not (tmp_path / "sae").exists()
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "sae")])
    assert "Missing option '--acts'" in result.output and "has no flag" not in result.output
