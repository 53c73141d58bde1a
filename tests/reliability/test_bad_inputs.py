"""Every bad input the issue lists, as a user types it: one clear line, exit 1,
before the work, and nothing of an existing output changed (``guarded``)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

# -- activations: NaN/Inf, degenerate arrays ----------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("command", ["info", "train", "evaluate", "analyze", "sweep"])
def test_nonfinite_activations_are_refused_by_every_stage(
    save_acts, guarded, run_cli, bad, command
):
    cli, one_line = run_cli
    o = guarded
    x = np.load(o.npy)
    x[7, 5] = bad
    acts = save_acts(x)
    args = {
        "info": ["info", acts],
        "train": ["train", "--acts", acts, "--out", o.sae, "--overwrite"],
        "evaluate": ["evaluate", "--sae", o.sae, "--acts", acts],
        "analyze": ["analyze", "--sae", o.sae, "--acts", acts, "--out", o.atlas, "--overwrite"],
        "sweep": ["sweep", "--acts", acts, "--out", o.sweep, "--overwrite", "--values", "2", "4"],
    }[command]
    one_line(cli(*args), "row 7, column 5", "--on-nonfinite skip")


def test_skip_leaves_the_bad_rows_out_and_keeps_their_index(save_acts, run_cli):
    from saeatlas.store import ActivationStore

    cli, _ = run_cli
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    x[[4, 11], 1] = np.nan
    acts = save_acts(x)
    store = ActivationStore.open(acts, on_nonfinite="skip")
    assert store.n_rows == 18 and store.n_skipped_rows == 2
    kept = np.delete(x, [4, 11], axis=0)
    np.testing.assert_array_equal(store.read().numpy(), kept)
    np.testing.assert_allclose(store.mean, kept.mean(axis=0))  # not polluted by the NaN rows
    assert store.rows().column("sample").to_pylist() == [i for i in range(20) if i not in (4, 11)]
    r = cli("info", acts, "--on-nonfinite", "skip")
    assert r.exit_code == 0 and "2 rows with NaN/Inf were skipped" in r.output, r.output


@pytest.mark.parametrize(
    "shape,needle",
    [((0, 4), "no activations"), ((5, 0), "no activations"), ((2, 3, 4), "[rows, units]")],
)
def test_empty_and_misshapen_arrays(tmp_path, save_acts, guarded, run_cli, shape, needle):
    cli, one_line = run_cli
    acts = save_acts(np.zeros(shape, np.float32))
    one_line(cli("analyze", "--sae", guarded.sae, "--acts", acts, "--out", tmp_path / "a"), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts.npy"]  # no atlas, no lock left
    one_line(cli("train", "--acts", acts, "--out", guarded.sae, "--overwrite"), needle)


@pytest.mark.parametrize("rows", [1, 2, 15])
def test_too_few_rows_to_train(save_acts, guarded, run_cli, rows):
    cli, one_line = run_cli
    acts = save_acts(np.random.default_rng(0).normal(size=(rows, 18)).astype(np.float32))
    one_line(cli("train", "--acts", acts, "--out", guarded.sae, "--overwrite"), "minimum 16")


def test_constant_rows_are_not_trained_on(save_acts, guarded, run_cli):
    """An SAE was trained and saved with FVU 0 (of undefined variance) on them."""
    cli, one_line = run_cli
    acts = save_acts(np.full((40, 18), 3.0, np.float32))
    one_line(cli("train", "--acts", acts, "--out", guarded.sae, "--overwrite"), "is constant")


def test_too_few_or_constant_rows_to_evaluate(save_acts, guarded, run_cli):
    cli, one_line = run_cli
    one_line(
        cli("evaluate", "--sae", guarded.sae, "--acts", guarded.npy, "--start", "299"), "fewer than"
    )
    acts = save_acts(np.ones((40, 18), np.float32))
    one_line(cli("evaluate", "--sae", guarded.sae, "--acts", acts), "do not vary")


@pytest.mark.parametrize(
    "flags,needle",
    [
        # measured rows 0:300 and said nothing
        (["--stop", "1000"], "--stop (`stop`) 1000 is outside the store's 300 rows"),
        (["--start", "-5"], "--start (`start`) -5 is outside the store's 300 rows"),
        (["--start", "400"], "--start (`start`) 400 is outside"),
        (["--stop", "-1"], "--stop (`stop`) -1 is outside"),
        (["--start", "200", "--stop", "100"], "No rows in 200:100"),
    ],
)
def test_an_evaluate_range_outside_the_store_is_refused(guarded, run_cli, flags, needle):
    cli, one_line = run_cli
    one_line(cli("evaluate", "--sae", guarded.sae, "--acts", guarded.store, *flags), needle)


@pytest.mark.parametrize(
    "flags,needle",
    [
        # these two were ignored: the metrics printed without the downstream loss
        (["--labels", "{labels}"], "--inputs and --labels are for the downstream loss"),
        (["--loss", "next-token"], "--loss is for the downstream loss; give --model"),
        # this one failed only after the metrics were computed
        (["--model", "{model}", "--inputs", "{inputs}"], "--model needs --labels FILE"),
    ],
)
def test_evaluate_refuses_model_flags_it_would_ignore_or_fail_on_late(
    tmp_path, guarded, run_cli, forbid, flags, needle
):
    import saeatlas.evaluate

    forbid(saeatlas.evaluate, "evaluate_sae")
    cli, one_line = run_cli
    np.save(tmp_path / "y.npy", np.zeros(300, int))
    where = dict(labels=tmp_path / "y.npy", model=guarded.model, inputs=guarded.inputs)
    flags = [f.format(**where) for f in flags]
    one_line(cli("evaluate", "--sae", guarded.sae, "--acts", guarded.store, *flags), needle)


def test_integer_arrays_are_refused(save_acts, guarded, run_cli):
    cli, one_line = run_cli
    acts = save_acts(np.ones((40, 18), np.int32))
    one_line(cli("info", acts), "activations must be floats")


# -- manifests ----------------------------------------------------------------------------------


@pytest.fixture
def store_copy(tmp_path, outputs):
    dst = tmp_path / "store"
    shutil.copytree(outputs.store, dst)
    return dst


def _edit_manifest(store, edit):
    m = json.loads((store / "manifest.json").read_text())
    edit(m)
    (store / "manifest.json").write_text(json.dumps(m))


def _moved_boundary(m):
    m["layers"][0]["stop"] -= 2
    m["layers"][1]["start"] -= 2


MANIFEST_LIES = {
    "dtype": (lambda m: m.update(dtype="float16"), "float32"),
    "n_rows": (lambda m: m.update(n_rows=m["n_rows"] + 1), "do not add up"),
    "mean truncated": (lambda m: m.update(mean=m["mean"][:-1]), "`mean` must hold 18"),
    "std negative": (lambda m: m["std"].__setitem__(0, -1.0), "`std` must hold"),
    "moved layer boundary": (_moved_boundary, "layer map is corrupt"),
    "gap between layers": (
        lambda m: m["layers"][1].update(start=m["layers"][1]["start"] + 1),
        "tile",
    ),
    "shard rows": (lambda m: m["shards"][0].update(rows=m["shards"][0]["rows"] - 1), "add up"),
    "shard outside": (
        lambda m: m["shards"][0].update(file="../x.safetensors"),
        "outside the store",
    ),
    "unknown key": (lambda m: m.update(colour="red"), "Unknown manifest keys"),
    "missing key": (lambda m: m.pop("layers"), "not a valid saeatlas manifest"),
    "wrong type": (lambda m: m.update(n_rows="many"), "not a valid saeatlas manifest"),
    "newer format": (lambda m: m.update(format_version=99), "Upgrade saeatlas"),
    "format 0": (lambda m: m.update(format_version=0), "`format_version` must be 1 or more"),
    "no layers": (lambda m: m.update(layers=[]), "lists no layers"),
    "layer twice": (lambda m: m["layers"][1].update(name="1"), "listed more than once"),
    "unknown layout": (lambda m: m["layers"][0].update(layout="tokens"), "`layout` 'tokens'"),
    "shard twice": (
        lambda m: m["shards"].__setitem__(1, m["shards"][0]),  # the same rows read twice
        "lists shard 'shard-00000.safetensors' twice",
    ),
    "negative skipped": (
        lambda m: m.update(n_nonfinite_rows_skipped=-1),
        "negative `n_nonfinite_rows_skipped`",
    ),
}


@pytest.mark.parametrize("lie", sorted(MANIFEST_LIES))
@pytest.mark.parametrize("command", ["info", "train", "analyze"])
def test_manifests_that_lie_are_refused(tmp_path, store_copy, guarded, run_cli, lie, command):
    cli, one_line = run_cli
    edit, needle = MANIFEST_LIES[lie]
    _edit_manifest(store_copy, edit)
    args = {
        "info": ["info", store_copy],
        "train": ["train", "--acts", store_copy, "--out", guarded.sae, "--overwrite"],
        "analyze": ["analyze", "--sae", guarded.sae, "--acts", store_copy, "--out", tmp_path / "a"],
    }[command]
    one_line(cli(*args), needle)


@pytest.mark.parametrize("verify", [False, True])
def test_a_missing_shard_is_named(store_copy, guarded, run_cli, verify):
    cli, one_line = run_cli
    (store_copy / "shard-00001.safetensors").unlink()
    one_line(cli("info", store_copy, *(["--verify"] if verify else [])), "shard-00001", "missing")


def test_row_metadata_of_another_length_is_refused(store_copy):
    import pyarrow.parquet as pq

    from saeatlas.errors import StoreError
    from saeatlas.store import ActivationStore

    rows = store_copy / "rows.parquet"
    pq.write_table(pq.read_table(rows).slice(0, 10), rows)
    with pytest.raises(StoreError, match="holds 10 rows, but the store has 300"):
        ActivationStore.open(store_copy).rows()


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_verify_checks_the_row_metadata(store_copy, run_cli, damage):
    cli, one_line = run_cli
    rows = store_copy / "rows.parquet"
    rows.unlink() if damage == "missing" else rows.write_text("garbage")
    needle = "is missing" if damage == "missing" else "unreadable"
    one_line(cli("info", store_copy, "--verify"), "rows.parquet", needle)


def test_verify_checks_the_rows_are_in_order(store_copy, run_cli):
    """rows.parquet re-saved in another order (sorted by hand) passed --verify, and
    readers that take its columns in storage order paired rows with others' samples."""
    import pyarrow.parquet as pq

    cli, one_line = run_cli
    rows = store_copy / "rows.parquet"
    table = pq.read_table(rows)
    pq.write_table(table.take(np.arange(table.num_rows)[::-1].copy()), rows)
    one_line(cli("info", store_copy, "--verify"), "lists row 299 at position 0", "Sort it by `row`")
    from saeatlas.errors import StoreError
    from saeatlas.store import ActivationStore

    with pytest.raises(StoreError, match="out of order"):  # the bootstrap reads `sample` alone
        ActivationStore.open(store_copy).rows(["sample"])


def test_verify_recomputes_the_statistics(store_copy, run_cli):
    cli, one_line = run_cli
    assert cli("info", store_copy, "--verify").exit_code == 0
    _edit_manifest(store_copy, lambda m: m["mean"].__setitem__(3, m["mean"][3] * 1.01 + 1e-3))
    line = one_line(cli("info", store_copy, "--verify"), "wrong per-unit mean", "unit 3: ")
    assert "np.float64" not in line  # the numbers as numbers, not numpy's repr


def test_a_corrupt_shard_is_found(store_copy, run_cli):
    cli, one_line = run_cli
    shard = store_copy / "shard-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-4:] = b"\xff\xff\xff\x7f"  # a NaN in place of the last value
    shard.write_bytes(bytes(data))
    one_line(cli("info", store_copy, "--verify"), "sha256")


# -- SAE files ----------------------------------------------------------------------------------


@pytest.fixture
def sae_copy(tmp_path, outputs):
    dst = tmp_path / "sae"
    shutil.copytree(outputs.sae, dst)
    return dst


def _edit_weights(sae, edit):
    w = load_file(str(sae / "sae_weights.safetensors"))
    edit(w)
    save_file(w, str(sae / "sae_weights.safetensors"))


SAE_DAMAGE = {
    "empty cfg": (lambda s: (s / "cfg.json").write_text("{}"), "required keys"),
    "cfg not json": (lambda s: (s / "cfg.json").write_text("{d_in: 1"), "not valid JSON"),
    "cfg a list": (lambda s: (s / "cfg.json").write_text("[1, 2]"), "JSON object"),
    "cfg nested past the recursion limit": (
        lambda s: (s / "cfg.json").write_text("[" * 100_000 + "]" * 100_000),
        "not valid JSON",
    ),
    "cfg with a 5000-digit number": (
        lambda s: (s / "cfg.json").write_text('{"d_in": ' + "9" * 5000 + "}"),
        "not valid JSON",
    ),
    "k text": (
        lambda s: (s / "cfg.json").write_text(
            json.dumps({**json.loads((s / "cfg.json").read_text()), "k": "eight"})
        ),
        "`k` must be int",
    ),
    "row-dependent normalisation": (
        lambda s: (s / "cfg.json").write_text(
            json.dumps(
                {**json.loads((s / "cfg.json").read_text()), "normalize_activations": "layer_norm"}
            )
        ),
        "'layer_norm'",
    ),
    "unknown architecture": (
        lambda s: (s / "cfg.json").write_text(
            json.dumps({**json.loads((s / "cfg.json").read_text()), "architecture": "gated"})
        ),
        "Unknown `architecture`",
    ),
    "int32 W_enc": (
        lambda s: _edit_weights(s, lambda w: w.update(W_enc=w["W_enc"].round().to(torch.int32))),
        "must be floats",
    ),
    "NaN weights": (
        lambda s: _edit_weights(s, lambda w: w["W_dec"].__setitem__((0, 0), float("nan"))),
        "NaN/Inf",
    ),
    "wrong shape": (
        lambda s: _edit_weights(s, lambda w: w.update(b_enc=w["b_enc"][:-1].clone())),
        "`b_enc`",
    ),
    "a threshold beside a topk config (a batchtopk SAE relabelled)": (
        lambda s: _edit_weights(s, lambda w: w.update(threshold=torch.full((24,), 0.5))),
        "['threshold'] that its config does not use",
    ),
    "weights missing": (
        lambda s: (s / "sae_weights.safetensors").unlink(),
        "is not an SAE directory",
    ),
    "weights garbage": (
        lambda s: (s / "sae_weights.safetensors").write_bytes(b"garbage"),
        "unreadable",
    ),
}


@pytest.mark.parametrize("damage", sorted(SAE_DAMAGE))
def test_damaged_sae_files_are_refused(sae_copy, guarded, run_cli, damage):
    cli, one_line = run_cli
    edit, needle = SAE_DAMAGE[damage]
    edit(sae_copy)
    one_line(cli("evaluate", "--sae", sae_copy, "--acts", guarded.store), needle)


def test_an_sae_layer_map_is_checked_layer_by_layer(sae_copy, outputs, run_cli):
    cli, one_line = run_cli
    store = outputs.store
    cfg = json.loads((sae_copy / "cfg.json").read_text())
    a, b = cfg["layers"]
    a["stop"], b["start"] = a["stop"] - 2, b["start"] - 2  # same total width
    (sae_copy / "cfg.json").write_text(json.dumps(cfg))
    one_line(cli("evaluate", "--sae", sae_copy, "--acts", store), "units")


# -- export-neuronpedia ---------------------------------------------------------------------------


def _atlas_of(tmp_path, outputs, **sae):
    """A copy of the protected atlas whose atlas.json names the SAE it was made from (and
    whose features and units are that SAE's ``d_sae`` latents and ``d_in`` units)."""
    import pandas as pd

    atlas = tmp_path / "atlas"
    shutil.copytree(outputs.atlas, atlas)
    summary = json.loads((atlas / "atlas.json").read_text())
    (atlas / "atlas.json").write_text(json.dumps({**summary, "sae": sae}))
    n = sae["d_sae"]
    features = dict(feature=range(n), module=[-1] * n, density=[0.1] * n)
    pd.DataFrame(features).to_parquet(atlas / "features.parquet", index=False)
    n = sae["d_in"]  # (atlas.json's `sae.d_in` is compared with units.parquet)
    units = dict(unit=range(n), layer=["a"] * n, index=range(n), module=[-1] * n)
    pd.DataFrame(units).to_parquet(atlas / "units.parquet", index=False)
    return atlas


@pytest.mark.parametrize("d_sae", [8, 48])
def test_export_neuronpedia_refuses_an_sae_the_atlas_was_not_made_from(
    tmp_path, guarded, run_cli, d_sae
):
    """A smaller SAE crashed on the atlas's feature indices; a larger one was exported
    with the atlas's modules silently attached to other features."""
    cli, one_line = run_cli
    atlas = _atlas_of(tmp_path, guarded, path=str(guarded.sae), d_in=18, d_sae=d_sae)
    args = ["--out", tmp_path / "np", "--acts", guarded.store]
    one_line(cli("export-neuronpedia", atlas, *args), f"d_sae {d_sae}")
    assert not (tmp_path / "np").exists()


@pytest.mark.parametrize(
    "text, needle",
    [("[1]", "must hold a JSON object"), ("[" * 100_000 + "]" * 100_000, "unreadable")],
)
def test_export_neuronpedia_refuses_an_atlas_json_that_is_no_object(
    tmp_path, guarded, run_cli, text, needle
):
    cli, one_line = run_cli
    atlas = tmp_path / "atlas"
    shutil.copytree(guarded.atlas, atlas)
    (atlas / "atlas.json").write_text(text)
    one_line(cli("export-neuronpedia", atlas, "--out", tmp_path / "np"), needle)


@pytest.mark.parametrize("name", ["", "  "])
def test_export_neuronpedia_refuses_an_empty_sae_set(tmp_path, guarded, run_cli, name):
    """Every batch named no SAE set, which Neuronpedia's upload refuses."""
    cli, one_line = run_cli
    atlas = _atlas_of(tmp_path, guarded, path=str(guarded.sae), d_in=18, d_sae=24)
    args = ["--out", tmp_path / "np", "--sae-set", name]
    one_line(cli("export-neuronpedia", atlas, *args), "`sae_set` (--sae-set) must name")
    assert not (tmp_path / "np").exists()


def test_export_neuronpedia_to_a_file_fails_before_encoding(
    tmp_path, guarded, run_cli, monkeypatch
):
    import saeatlas.export.neuronpedia as neuronpedia

    cli, one_line = run_cli
    monkeypatch.setattr(neuronpedia, "FeatureStats", None)  # the work would fail on it
    (tmp_path / "file").write_text("mine")
    atlas = _atlas_of(tmp_path, guarded, path=str(guarded.sae), d_in=18, d_sae=24)
    one_line(cli("export-neuronpedia", atlas, "--out", tmp_path / "file"), "not a directory")
    assert (tmp_path / "file").read_text() == "mine"


def test_export_neuronpedia_never_replaces_an_sae_whose_swap_a_kill_interrupted(
    tmp_path, guarded, run_cli
):
    """An SAE killed between the two renames of its save is whole only beside --out: the
    check saw nothing there, and the export's own swap finished and replaced it."""
    cli, one_line = run_cli
    shutil.copytree(guarded.sae, tmp_path / ".np.partial")
    (tmp_path / ".np.old").mkdir()
    atlas = _atlas_of(tmp_path, guarded, path=str(guarded.sae), d_in=18, d_sae=24)
    args = ["--out", tmp_path / "np", "--acts", guarded.store]
    one_line(cli("export-neuronpedia", atlas, *args), "not a Neuronpedia export's")
    assert (tmp_path / "np" / "sae_weights.safetensors").is_file()


# -- capture input and label files --------------------------------------------------------------


def _npy(array: np.ndarray, **kw):
    return lambda p: np.save(p, array, **kw)


INPUT_FILES = {
    "empty.npy": (lambda p: p.write_bytes(b""), "No data left"),
    "objects.npy": (_npy(np.array([{"a": 1}, 2], dtype=object), allow_pickle=True), "pickled"),
    "scalar.npy": (_npy(np.array(3.0)), "batch dimension"),
    "words.npy": (_npy(np.array(["a", "b"])), "dtype <U1"),
    "latin1.txt": (lambda p: p.write_bytes(b"caf\xe9\n"), "not UTF-8"),
    "wrong-key.jsonl": (lambda p: p.write_text('{"txt": "a"}\n'), 'the key "text"'),
    "number.jsonl": (lambda p: p.write_text('{"text": 5}\n'), "line 1"),
    "blank.jsonl": (lambda p: p.write_text("\n\n"), "no texts"),
    "folder.npy": (lambda p: p.mkdir(), "is a directory"),
    "pipe.npy": (lambda p: os.mkfifo(p), "is not a regular file"),  # was "does not exist"
}


#: Labels may be text lines, strings or any 1-d array: only these files are bad labels.
BAD_LABEL_FILES = ("empty.npy", "folder.npy", "latin1.txt", "objects.npy", "pipe.npy")


@pytest.mark.parametrize(
    "flag,name",
    [("--inputs", n) for n in sorted(INPUT_FILES)] + [("--labels", n) for n in BAD_LABEL_FILES],
)
def test_bad_input_and_label_files(tmp_path, guarded, run_cli, flag, name):
    cli, one_line = run_cli
    make, needle = INPUT_FILES[name]
    make(tmp_path / name)
    files = {"--inputs": guarded.inputs, "--labels": None, flag: tmp_path / name}
    args = ["--labels", files["--labels"]] if files["--labels"] else []
    r = cli(
        "capture", "--model", guarded.model, "--inputs", files["--inputs"], *args,
        "--layers", "1", "--out", tmp_path / "store", "-q",
    )  # fmt: skip
    one_line(r, needle)
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("inputs", [torch.tensor(1.0), np.array(["a", "b"])])
def test_capture_from_python_refuses_scalar_and_string_arrays(tmp_path, inputs):
    from saeatlas.capture import capture_activations
    from saeatlas.errors import InputsError

    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(InputsError, match="batch dimension|dtype <U1"):
        capture_activations(model, inputs, ["0"], tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


# -- model specs whose code fails ---------------------------------------------------------------

BAD_MODEL_FILES = {
    "syntax": ("def build(:\n", "SyntaxError"),
    "import": ("import saeatlas_no_such_module\n", "ModuleNotFoundError"),
    "top level": ("raise RuntimeError('at import')\n", "at import"),
    "factory": ("def build():\n    raise KeyError('in factory')\n", "KeyError: 'in factory'"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODEL_FILES))
def test_model_code_that_fails_is_one_line_naming_the_spec(tmp_path, run_cli, case):
    cli, one_line = run_cli
    code, needle = BAD_MODEL_FILES[case]
    (tmp_path / "m.py").write_text(code)
    one_line(cli("layers", f"{tmp_path / 'm.py'}:build"), needle, "m.py", "--debug")
    (tmp_path / "d.py").mkdir()
    one_line(cli("layers", f"{tmp_path / 'd.py'}:build"), "is a directory")


def test_layers_with_an_inputs_file_of_no_samples(tmp_path, outputs, run_cli):
    cli, one_line = run_cli
    np.save(tmp_path / "none.npy", np.zeros((0, 6), np.float32))
    one_line(cli("layers", outputs.model, "--inputs", tmp_path / "none.npy"), "no samples")


def test_evaluate_with_inputs_the_model_cannot_take_is_one_line(tmp_path, guarded, run_cli):
    """The downstream loss's forward pass crashed with the model's RuntimeError."""
    cli, one_line = run_cli
    np.save(tmp_path / "x.npy", np.zeros((20, 5), np.float32))  # the model takes 6 features
    np.save(tmp_path / "y.npy", np.zeros(20, np.int64))
    args = ["--sae", guarded.sae, "--acts", guarded.store, "--model", guarded.model]
    args += ["--inputs", tmp_path / "x.npy", "--labels", tmp_path / "y.npy"]
    one_line(cli("evaluate", *args), "forward pass failed on inputs 0..19")


@pytest.mark.parametrize(
    "labels,needle",
    [
        (np.zeros((6, 2)), r"shape \[6, 2\] for 6"),
        ([1, "a", 2.0, None, 1, 1], "all numbers"),
        ([2**70, 1, 2, 3, 4, 5], r"integers of at most 64 bits"),  # was an OverflowError
        ([[1, 2], [3]] * 3, "not one per sample"),
    ],
)
def test_labels_that_cannot_be_stored_are_refused_before_the_work(tmp_path, labels, needle):
    from saeatlas.capture import capture_activations
    from saeatlas.errors import InputsError

    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(InputsError, match=needle):
        capture_activations(
            model, torch.randn(6, 2), ["0"], tmp_path / "s", labels=labels, progress=False
        )
    assert not (tmp_path / "s").exists()


def test_a_config_of_another_type_is_refused(tmp_path):
    from saeatlas.capture import capture_activations
    from saeatlas.errors import ConfigError

    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match=r"CaptureConfig\(\*\*settings\) for a dict"):
        capture_activations(model, torch.randn(6, 2), ["0"], tmp_path / "s", {"batch_size": 2})


def test_a_byte_order_mark_is_not_part_of_the_first_text(tmp_path):
    from saeatlas.capture import load_inputs

    (tmp_path / "t.txt").write_bytes(b"\xef\xbb\xbfhello\nworld\n")
    (tmp_path / "t.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "hello"}\n')
    assert load_inputs(tmp_path / "t.txt") == ["hello", "world"]
    assert load_inputs(tmp_path / "t.jsonl") == ["hello"]


def test_texts_are_split_at_line_ends_only(tmp_path):
    """str.splitlines also splits at U+2028, U+0085 and form feeds: one text became
    two samples, and a JSON line holding U+2028 unescaped was refused as not JSON."""
    from saeatlas.capture import load_inputs, load_labels

    texts = ["one\u2028text", "a\x0cpage", "next\x85line"]
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\r\n", encoding="utf-8")
    (tmp_path / "t.jsonl").write_text(
        "\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts), encoding="utf-8"
    )
    assert load_inputs(tmp_path / "t.txt") == texts
    assert load_inputs(tmp_path / "t.jsonl") == texts
    assert load_labels(tmp_path / "t.txt").tolist() == texts


def test_jsonl_labels_are_read_as_json(tmp_path):
    """A .jsonl labels file was read as text lines: '"cat"' kept its quotes and
    '{"label": 3}' became a label, silently."""
    from saeatlas.capture import load_labels
    from saeatlas.errors import InputsError

    (tmp_path / "l.jsonl").write_text('"cat"\n{"label": "dog"}\n\n"cat"\n')
    (tmp_path / "n.jsonl").write_text('1\n{"label": 2}\n')
    (tmp_path / "bad.jsonl").write_text('{"lab": 1}\n')
    assert load_labels(tmp_path / "l.jsonl").tolist() == ["cat", "dog", "cat"]
    assert load_labels(tmp_path / "n.jsonl").tolist() == [1, 2]
    with pytest.raises(
        InputsError, match='line 1 .* the key "label", or one JSON number or string'
    ):
        load_labels(tmp_path / "bad.jsonl")


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">f2"])
def test_big_endian_arrays_read_as_their_values(tmp_path, dtype):
    """torch takes only the machine's byte order: such files raised numpy's ValueError."""
    from saeatlas.capture import capture_activations
    from saeatlas.store import ActivationStore

    x = np.random.default_rng(0).normal(size=(12, 3))
    np.save(tmp_path / "acts.npy", x.astype(dtype))
    got = ActivationStore.open(tmp_path / "acts.npy").read().numpy()
    np.testing.assert_array_equal(got, x.astype(dtype).astype(np.float32))
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    a = capture_activations(model, x.astype(dtype), ["0"], tmp_path / "a", progress=False)
    b = capture_activations(model, x.astype(dtype[1:]), ["0"], tmp_path / "b", progress=False)
    assert torch.equal(a.read(), b.read())


def test_bfloat16_safetensors_inputs_are_read(tmp_path):
    from saeatlas.capture import load_inputs

    x = torch.randn(4, 6).bfloat16()
    save_file({"inputs": x}, str(tmp_path / "x.safetensors"))
    np.testing.assert_array_equal(load_inputs(tmp_path / "x.safetensors"), x.float().numpy())
