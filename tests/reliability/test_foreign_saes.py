"""SAELens and sparsify directories damaged by hand: each is refused in one line naming
the problem, never imported as an SAE that encodes differently from its source, and
an import never replaces an SAE already there nor leaves half a run behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _cfg(key, value):
    return lambda c, w: c.__setitem__(key, value)


def _drop_cfg(key):
    return lambda c, w: c.pop(key)


def _weight(name, edit):
    return lambda c, w: w.__setitem__(name, edit(w[name]))


def _nan(t):
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


SAELENS_DAMAGE = {
    # (fixture, damage, words the error must hold)
    "topk without k": ("topk", _drop_cfg("k"), "without `k`"),
    "k as text": ("topk", _cfg("k", "four"), "`k` must be int"),
    "k as a float": ("topk", _cfg("k", 4.5), "`k` must be int"),
    "architecture a list": ("standard", _cfg("architecture", ["topk"]), "not supported"),
    "apply_b_dec_to_input as text": (
        "standard",
        _cfg("apply_b_dec_to_input", "false"),
        "`apply_b_dec_to_input` must be true or false",
    ),
    "rescale flag as text": (
        "topk_rescale",
        _cfg("rescale_acts_by_decoder_norm", "yes"),
        "`rescale_acts_by_decoder_norm`",
    ),
    "unknown normalisation": ("standard", _cfg("normalize_activations", "whiten"), "'whiten'"),
    "pre-6.0 topk activation on a standard SAE": (
        "standard",
        lambda c, w: c.update(activation_fn_str="topk", activation_fn_kwargs={"k": 4}),
        "activation 'topk'",
    ),
    "d_in larger than the weights": ("standard", _cfg("d_in", 17), "`W_enc` is (16, 32)"),
    "d_sae missing": ("standard", _drop_cfg("d_sae"), "`d_sae` must be int"),
    "W_enc missing": ("standard", lambda c, w: w.pop("W_enc"), "`W_enc` is missing"),
    "W_dec transposed": ("standard", _weight("W_dec", lambda t: t.T.contiguous()), "`W_dec`"),
    "b_enc of one value (would broadcast)": (
        "standard",
        _weight("b_enc", lambda t: t[:1].clone()),
        "`b_enc` is (1,)",
    ),
    "integer W_enc": ("standard", _weight("W_enc", lambda t: t.round().int()), "floats"),
    "NaN in W_enc": ("standard", _weight("W_enc", _nan), "NaN/Inf"),
    "NaN threshold": ("jumprelu", _weight("threshold", _nan), "`threshold`"),
    "threshold too short": ("jumprelu", _weight("threshold", lambda t: t[:3].clone()), "(3,)"),
    "rescaled decoder row of norm 0": (
        "topk_rescale",
        _weight("W_dec", lambda t: torch.cat([torch.zeros_like(t[:1]), t[1:]])),
        "norm 0",
    ),
    "cfg a list": ("standard", "[1, 2]", "JSON object"),
    # twelfth sweep: read as no hook at all, the SAE then matched to the store without it
    "hook_name a number": ("standard", _cfg("hook_name", 3), "`hook_name` must be"),
    "metadata.hook_name a number": (
        "standard",
        lambda c, w: c["metadata"].__setitem__("hook_name", 0),
        "`metadata.hook_name` must be",
    ),
    "metadata a list": ("standard", _cfg("metadata", ["blocks.0.hook_resid_pre"]), "`metadata`"),
    "dtype a list": ("standard", _cfg("dtype", ["float16"]), "`dtype` must be"),
    "a log_threshold beside the threshold (SAELens loads strictly)": (
        "jumprelu",
        lambda c, w: w.__setitem__("log_threshold", w["threshold"].log()),
        "['log_threshold']",
    ),
    "float64 weights beyond float32's range (would load as Inf)": (
        "standard",
        lambda c, w: w.update(
            {k: v.double() * (1e300 if k == "W_enc" else 1) for k, v in w.items()}
        ),
        "beyond float32's range",
    ),
    "finetuning scaling factor": (
        "standard",
        lambda c, w: w.__setitem__("scaling_factor", torch.full((32,), 2.0)),
        "`scaling_factor`",
    ),
}


def _damaged(tmp_path, fixture, damage, weights_file):
    d = tmp_path / "src"
    shutil.copytree(fixture, d)
    if isinstance(damage, str):
        (d / "cfg.json").write_text(damage)
        return d
    cfg = json.loads((d / "cfg.json").read_text())
    w = load_file(str(d / weights_file))
    damage(cfg, w)
    (d / "cfg.json").write_text(json.dumps(cfg))
    save_file(w, str(d / weights_file))
    return d


@pytest.mark.parametrize("case", sorted(SAELENS_DAMAGE))
def test_damaged_saelens_directories_are_refused(tmp_path, run_cli, case):
    cli, one_line = run_cli
    fixture, damage, needle = SAELENS_DAMAGE[case]
    src = _damaged(tmp_path, FIXTURES / "saelens" / fixture, damage, "sae_weights.safetensors")
    one_line(cli("import-saelens", src, "--out", tmp_path / "out"), needle)
    assert not (tmp_path / "out").exists()


def test_a_truncated_saelens_weights_file_is_refused(tmp_path, run_cli):
    cli, one_line = run_cli
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "saelens" / "standard", src)
    weights = src / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    one_line(cli("evaluate", "--sae", src, "--acts", tmp_path / "x.npy"), "unreadable")


SPARSIFY_DAMAGE = {
    "k missing": (_drop_cfg("k"), "no `k`"),
    "k as text": (_cfg("k", "3"), "`k` must be int"),
    "k a float": (_cfg("k", 3.7), "`k` must be int"),
    "k true": (_cfg("k", True), "`k` must be int"),
    "signed coder (no ReLU, top k by absolute value)": (_cfg("signed", True), "`signed` true"),
    "num_latents not the weights'": (_cfg("num_latents", 31), "`num_latents` 31"),
    # num_latents 0 is expansion_factor x d_in: 320 latents, the weights' 30 passed
    "num_latents 0 and expansion_factor not the weights'": (
        _cfg("num_latents", 0),
        "`expansion_factor` 32 (320 latents",
    ),
    "d_in as text": (_cfg("d_in", "10"), "`d_in` '10'"),
    "cfg a list": ("[]", "JSON object"),
    "encoder.weight flat": (_weight("encoder.weight", lambda t: t.flatten().clone()), "(300,)"),
    "NaN in the encoder": (_weight("encoder.weight", _nan), "NaN/Inf"),
    "integer W_dec": (_weight("W_dec", lambda t: t.int()), "floats"),
    "b_dec of one value (would broadcast)": (_weight("b_dec", lambda t: t[:1].clone()), "`b_dec`"),
}


@pytest.mark.parametrize("case", sorted(SPARSIFY_DAMAGE))
def test_a_damaged_hookpoint_stops_the_whole_sparsify_import(tmp_path, run_cli, case):
    """The run's other hookpoint is fine and sorts first: nothing at all is written."""
    cli, one_line = run_cli
    damage, needle = SPARSIFY_DAMAGE[case]
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "sparsify" / "run", run)
    shutil.rmtree(run / "layers.1")
    _damaged(tmp_path, FIXTURES / "sparsify" / "run" / "layers.1", damage, "sae.safetensors")
    (tmp_path / "src").rename(run / "layers.1")
    one_line(cli("import-sparsify", run, "--out", tmp_path / "out"), needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("missing", ["sae.safetensors", "cfg.json"])
def test_a_sparsify_run_with_a_half_copied_hookpoint_is_refused(tmp_path, run_cli, missing):
    """A hookpoint folder without one of its two files was passed over: the run was
    imported without that hookpoint, reporting success."""
    cli, one_line = run_cli
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "sparsify" / "run", run)
    (run / "layers.1" / missing).unlink()
    one_line(cli("import-sparsify", run, "--out", tmp_path / "out"), "layers.1'", missing)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["import-saelens", "import-sparsify"])
def test_an_import_never_replaces_an_sae_without_overwrite(tmp_path, outputs, run_cli, command):
    cli, one_line = run_cli
    src = FIXTURES / ("saelens/topk" if command == "import-saelens" else "sparsify/run/layers.1")
    shutil.copytree(outputs.sae, tmp_path / "sae")
    before = {p.name: p.read_bytes() for p in (tmp_path / "sae").iterdir()}
    one_line(cli(command, src, "--out", tmp_path / "sae"), "--overwrite")
    assert {p.name: p.read_bytes() for p in (tmp_path / "sae").iterdir()} == before
    result = cli(command, src, "--out", tmp_path / "sae", "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "sae" / "metrics.jsonl").exists()


def test_an_import_of_a_sparsify_run_is_one_writer(tmp_path, run_cli, another_writer):
    """Each hookpoint was locked alone: two imports into one --out (with --overwrite)
    could leave one's first hookpoint beside the other's second, both reporting success."""
    cli, one_line = run_cli
    with another_writer(tmp_path / "out"):
        run = FIXTURES / "sparsify" / "run"
        one_line(cli("import-sparsify", run, "--out", tmp_path / "out"), "being written by")
    assert not (tmp_path / "out").exists()


def test_export_saelens_never_replaces_a_saeatlas_sae(tmp_path, run_cli):
    """An SAE directory of cfg.json and weights alone (what import-saelens writes) was
    replaced by the export, losing the saeatlas SAE."""
    cli, one_line = run_cli
    sae = tmp_path / "sae"
    r = cli("import-saelens", FIXTURES / "saelens" / "topk", "--out", sae)
    assert r.exit_code == 0, r.output
    before = {p.name: p.read_bytes() for p in sae.iterdir()}
    one_line(cli("export-saelens", sae, "--out", sae), "holds a saeatlas SAE")
    assert {p.name: p.read_bytes() for p in sae.iterdir()} == before


def test_export_saelens_never_replaces_an_sae_whose_swap_a_kill_interrupted(tmp_path, run_cli):
    """A saeatlas SAE killed between the two renames of its save is whole only beside
    --out: the check saw no SAE there, and the export's own swap finished and replaced it."""
    cli, one_line = run_cli
    r = cli("import-saelens", FIXTURES / "saelens" / "topk", "--out", tmp_path / "src")
    assert r.exit_code == 0, r.output
    shutil.copytree(tmp_path / "src", tmp_path / ".sae.partial")
    (tmp_path / ".sae.old").mkdir()
    before = {p.name: p.read_bytes() for p in (tmp_path / ".sae.partial").iterdir()}
    one_line(cli("export-saelens", tmp_path / "src", "--out", tmp_path / "sae"), "saeatlas SAE")
    assert {p.name: p.read_bytes() for p in (tmp_path / "sae").iterdir()} == before


def test_export_saelens_refuses_metadata_from_another_store(tmp_path, outputs, run_cli):
    cli, one_line = run_cli
    other = tmp_path / "other.npy"
    np.save(other, np.ones((20, 18), dtype=np.float32))  # the same width, other layer names
    one_line(cli("export-saelens", outputs.sae, "--out", tmp_path / "x", "--acts", other), "store")
    assert not (tmp_path / "x").exists()


def test_export_saelens_reads_a_npy_store_with_nan_rows(tmp_path, run_cli):
    # `--acts` of the .npy the SAE was trained on with --on-nonfinite skip: the export
    # stopped with "pass --on-nonfinite skip", a flag export-saelens does not have
    from saeatlas.sae import SAEConfig, SparseAutoencoder

    cli, _ = run_cli
    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    x[3] = np.nan
    np.save(tmp_path / "acts.npy", x)
    SparseAutoencoder(SAEConfig(architecture="relu", d_in=6, d_sae=8)).save(tmp_path / "sae")
    result = cli("export-saelens", tmp_path / "sae", "--out", tmp_path / "sl", "--acts",
                 tmp_path / "acts.npy")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sl" / "cfg.json").is_file()
