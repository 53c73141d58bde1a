"""The twenty-third hostile sweep's cases in the integrations, `torchrun` and the CLI and
config layer (run configs, global options, run stamps, the model adapters): each was
read wrongly, ended in a traceback or a misleading message, or redid or reused work
it should not have before its fix."""

from __future__ import annotations

import pytest


def _run_config(tmp_path, outputs, line):
    """A run config of the protected model and inputs, layer '1', and ``line``."""
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {outputs.model}\ninputs: {outputs.inputs}\nlayers: ['1']\n{line}\n")
    return config


@pytest.mark.parametrize(
    "line, needles",
    [
        # was k 90 (YAML 1.1's base 60), "`train.k` (90) cannot exceed `train.d_sae`"
        ("train: {d_sae: 128, k: 1:30}", ["`train.k` must be an integer, got '1:30'", "90"]),
        ("train: {lr: 1:30.5}", ["`train.lr` must be a number or null, got '1:30.5'", "90.5"]),
    ],
)
def test_a_run_config_reads_no_base_60_numbers(outputs, tmp_path, run_cli, line, needles):
    cli, one_line = run_cli
    one_line(cli("run", _run_config(tmp_path, outputs, line), "--check"), *needles)


def test_a_config_reads_a_leading_zero_as_a_decimal_number(outputs, tmp_path):
    """`k: 010` was k 8 (YAML 1.1's octal) without a word; YAML 1.2 and JSON read 10."""
    from saeatlas.pipeline import load_run_config

    cfg = load_run_config(
        _run_config(tmp_path, outputs, "sweep: {enabled: false}\ntrain: {d_sae: 32, k: 010}")
    )
    assert cfg.train.k == 10


@pytest.mark.parametrize("value", ["nan", "-5", "1e7"])
def test_run_check_refuses_the_timeout_the_run_refuses(outputs, tmp_path, run_cli, value):
    """`run --check --timeout nan` called the config valid; the run then refused it."""
    cli, one_line = run_cli
    config = _run_config(tmp_path, outputs, "")
    one_line(cli("run", config, "--check", "--timeout", value), "--timeout must be a positive")


def test_run_check_waits_the_timeout_it_is_given(outputs, tmp_path, run_cli, monkeypatch):
    """Under torchrun the check's ranks waited the config's `capture.timeout_s`, not
    `--timeout`."""
    from saeatlas.pipeline import check

    waits = []
    monkeypatch.setattr(check, "run_ranks", lambda job, dev, s, fn: waits.append(s) or "ok")
    cli, _ = run_cli
    r = cli("run", _run_config(tmp_path, outputs, ""), "--check", "--timeout", "60")
    assert r.exit_code == 0, r.output
    assert waits == [60.0]


@pytest.mark.parametrize(
    "command",
    [
        ["capture", "--layers", "1", "--timeout", "1e400"],  # "`timeout_s` ... got inf"
        ["capture", "--layers", "1", "--timeout=1e400"],
        ["train", "--lr", "1e400"],  # "--lr must be a finite number, got inf"
        ["train", "--l1-coefficient", "-1e999"],
        ["sweep", "--over", "l1_coefficient", "--values", "1", "1e400"],
    ],
)
def test_a_number_beyond_a_float_is_shown_as_typed(outputs, tmp_path, run_cli, command):
    cli, one_line = run_cli
    sources = ["--model", outputs.model, "--inputs", outputs.inputs]
    if command[0] != "capture":
        sources = ["--acts", outputs.store]
    value = command[-1].split("=")[-1]
    line = one_line(cli(*command, *sources, "--out", tmp_path / "o"), f" {value} is beyond")
    assert "inf" not in line
    assert not (tmp_path / "o").exists()


def test_inputs_written_again_with_their_old_time_are_captured_again(recorded_capture, tmp_path):
    """Inputs saved again with other values of the same size, their modification time set
    back (`cp -p`, `tar x`, `os.utime`, a file system of whole seconds), were taken for
    the old ones: the run skipped every stage, its atlas describing the old rows."""
    import os

    import numpy as np

    decide = recorded_capture()[2]
    assert decide()[0].status == "skipped"
    x = tmp_path / "x.npy"
    st = x.stat()
    np.save(x, -np.load(x))
    os.utime(x, ns=(st.st_atime_ns, st.st_mtime_ns))
    outcome, _, why = decide()
    assert outcome is None and "inputs or labels file changed" in why


def test_inputs_touched_are_not_taken_for_edited(recorded_capture, tmp_path):
    """A `touch` of the inputs (or a copy of the same bytes) made the run refuse its own
    store as made from an edited file; the bytes decide now."""
    import os

    decide = recorded_capture()[2]
    os.utime(tmp_path / "x.npy", ns=(1, 1))
    assert decide()[0].status == "skipped"


def test_a_run_record_of_an_older_saeatlas_is_read_as_before(recorded_capture, tmp_path):
    """A record whose stamps hold a file's size and modification time alone (every run
    before this one) is compared on those: unchanged files keep the capture."""
    import os

    _, state, decide = recorded_capture()
    x = tmp_path / "x.npy"
    files = state.stages["capture"]["files"]
    files["inputs"] = files["inputs"][:2]
    files["model"] = files["model"][:2]
    assert decide()[0].status == "skipped"
    os.utime(x, ns=(1, 1))  # as before, a new time is an edit to such a record
    assert decide()[0] is None


def test_a_model_directory_written_again_with_its_old_times_is_stamped_anew(tmp_path):
    """A Hugging Face directory's weights saved again (as large, their times set back)
    kept its stamp; the bytes decide now, as for a file."""
    import os

    from saeatlas.pipeline.stamps import _unchanged, stamp

    (tmp_path / "config.json").write_text("{}")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"old weights")
    old, st = stamp(tmp_path), weights.stat()
    os.utime(weights, ns=(1, 1))
    assert _unchanged(old, tmp_path)  # the same bytes
    weights.write_bytes(b"new weights")
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not _unchanged(old, tmp_path)


def test_a_learning_rate_of_0_in_float32_is_refused(outputs, tmp_path, run_cli):
    """`--lr 1e-50` (0 in float32, where the weights are) trained an SAE whose every weight
    stayed as initialised, without a word; `train.lr` of a run config alike."""
    cli, one_line = run_cli
    args = ["--acts", outputs.store, "--out", tmp_path / "s", "--lr", "1e-50"]
    one_line(cli("train", *args), "--lr (1e-50) is 0 in float32", "at least 1.4e-45")
    config = _run_config(tmp_path, outputs, "train: {lr: 1e-50}")
    one_line(cli("run", config, "--check"), "`train.lr` (1e-50) is 0 in float32")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "command, needle",
    [
        (["info", ""], "`saeatlas info` is given an empty argument"),  # "'.' has no manifest"
        (["run", " "], "where it takes CONFIG"),  # "Config file '.' is a directory"
        (["train", "--acts", "", "--out", "{o}"], "--acts is empty"),
        (["train", "--acts=", "--out", "{o}"], "--acts is empty"),
        (["analyze", "--sae", "{sae}", "--acts", "{store}", "--out", "{o}", "--seed-sae", ""],
         "--seed-sae is empty"),
        (["capture", "--model", "{model}", "--inputs", "{inputs}", "--layers", "1",
          "--labels", "", "--out", "{o}"], "--labels is empty"),
    ],
)  # fmt: skip
def test_an_empty_path_is_refused_as_given(outputs, tmp_path, run_cli, command, needle):
    """An unset variable (`--acts "$X"`) was read as '.', and refused as the current
    folder's ("'.' has no manifest.json; it is not a saeatlas store")."""
    cli, one_line = run_cli
    names = {"o": tmp_path / "o", "sae": outputs.sae, "store": outputs.store}
    names.update(model=outputs.model, inputs=outputs.inputs)
    args = [a.format(**names) for a in command]
    line = one_line(cli(*args), needle, "unset variable")
    assert "'.'" not in line
    assert not (tmp_path / "o").exists()


def test_an_empty_out_writes_nothing_into_the_current_folder(tmp_path, run_cli, monkeypatch):
    """`import-sparsify RUN --out "$DIR"` with DIR unset imported every hookpoint's SAE
    among the current folder's files."""
    from pathlib import Path

    cli, one_line = run_cli
    monkeypatch.chdir(tmp_path)
    run = Path(__file__).parents[1] / "fixtures" / "sparsify" / "run"
    one_line(cli("import-sparsify", run, "--out", ""), "--out is empty")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("value", ["''", "' '"])
def test_a_run_config_refuses_empty_labels(outputs, tmp_path, run_cli, value):
    """`labels: ''` was read as the config's folder: "Labels file '/...' is a directory"."""
    cli, one_line = run_cli
    config = _run_config(tmp_path, outputs, f"labels: {value}")
    one_line(cli("run", config, "--check"), "`labels` is", "which names no file")


def test_a_run_config_without_the_section_gives_its_defaults(outputs, tmp_path, run_cli):
    """`train --config run.yaml` of a run config with no `train:` section (or `train:`
    left empty) was refused as "unknown key `model`", listing every train setting."""
    from saeatlas._config_cli import build_config
    from saeatlas.structure import AtlasConfig
    from saeatlas.train import TrainConfig

    cli, one_line = run_cli
    for line in ("", "train:", "train: null"):
        config = _run_config(tmp_path, outputs, line)
        assert build_config(TrainConfig, config, {"k": 2}, "train") == TrainConfig(k=2)
        assert build_config(AtlasConfig, config, {}, "analyze") == AtlasConfig()
    config = _run_config(tmp_path, outputs, "train: [1]")
    args = ["--acts", outputs.store, "--out", tmp_path / "s", "--config", config]
    one_line(cli("train", *args), "`train` must be a mapping of settings, got list [1]")


def test_a_config_that_is_a_pipe_is_named_as_one(outputs, tmp_path, run_cli):
    """`--config <(...)` (a pipe) and `saeatlas run /dev/null` were told the file "does
    not exist"."""
    import os

    cli, one_line = run_cli
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    args = ["--acts", outputs.store, "--out", tmp_path / "s", "--config", fifo]
    for r in (cli("train", *args), cli("run", "/dev/null", "--check")):
        line = one_line(r, "is not a regular file (a pipe or a device); give a YAML or JSON")
        assert "does not exist" not in line


LABEL_FUNCTIONS = """
import numpy as np

def pair():
    return np.zeros((300, 6)), np.arange(300)

def nothing():
    return None

def ragged():
    return [[1], [1, 2]]
"""


@pytest.mark.parametrize(
    "function, needle",
    [
        # NumPy's "setting an array element with a sequence" traceback
        ("pair", "returns a pair of ndarray and ndarray, as an inputs function may"),
        ("nothing", "returned None"),  # the run went on without labels
        ("ragged", "Labels are not one per sample"),  # NumPy's traceback
    ],
)
def test_a_labels_function_gives_labels(outputs, tmp_path, run_cli, function, needle):
    cli, one_line = run_cli
    (tmp_path / "labfns.py").write_text(LABEL_FUNCTIONS)
    config = _run_config(tmp_path, outputs, f"labels: {tmp_path / 'labfns.py'}:{function}")
    one_line(cli("run", config, "--check"), needle)


def test_a_helper_the_model_file_imports_is_stamped(tmp_path, outputs, monkeypatch):
    """A model file building its layers with a function of a module beside it
    (`helpers.act()`, a ReLU edited to a Tanh) left the run skipping every stage: only
    the files of the model's module classes and of the specs were stamped."""
    import sys

    from saeatlas.pipeline import load_run_config
    from saeatlas.pipeline.record import code_files
    from saeatlas.pipeline.source import load_source

    (tmp_path / "helpers_23.py").write_text(
        "from torch import nn\n\ndef act():\n    return nn.ReLU()\n"
    )
    (tmp_path / "model.py").write_text(
        "from torch import nn\nimport helpers_23\n\n"
        "def build():\n    return nn.Sequential(nn.Linear(6, 4), helpers_23.act())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "helpers_23", raising=False)
    config = tmp_path / "run.yaml"
    config.write_text(f"model: model.py:build\ninputs: {outputs.inputs}\nlayers: ['1']\n")
    cfg = load_run_config(config)
    assert str(tmp_path / "helpers_23.py") in code_files(cfg, load_source(cfg).model)


@pytest.mark.parametrize(
    "line, needle",
    [
        ("train: {lr: 1e400}", "`train.lr` 1e400 is beyond"),  # "got inf"
        ("sweep: {over: l1_coefficient, values: [1, 1e400]}", "`sweep.values` 1e400 is beyond"),
    ],
)
def test_a_config_number_beyond_a_float_is_shown_as_typed(outputs, tmp_path, run_cli, line, needle):
    cli, one_line = run_cli
    line = one_line(cli("run", _run_config(tmp_path, outputs, line), "--check"), needle)
    assert "inf" not in line


def test_sweep_refuses_a_sweep_section_it_does_not_read(outputs, tmp_path, run_cli):
    """`saeatlas sweep --config run.yaml` reads the run config's `train:` section: a
    `sweep:` section of another setting, values or seeds was passed over, and the sweep
    ran over k (the default --over) without a word."""
    cli, one_line = run_cli
    config = _run_config(tmp_path, outputs, "sweep: {over: l1_coefficient, seeds: 1}")
    args = ["--acts", outputs.store, "--out", tmp_path / "s", "--config", config]
    one_line(
        cli("sweep", *args, "--values", "4", "8"),
        "its `sweep:` section gives `over` 'l1_coefficient', but saeatlas sweep takes it "
        "from --over ('k')",
    )
    one_line(
        cli("sweep", *args, "--over", "l1_coefficient", "--values", "0.1", "0.2"),
        "gives `seeds` 1, but saeatlas sweep takes it from --seeds (2)",
    )
    assert not (tmp_path / "s").exists()
