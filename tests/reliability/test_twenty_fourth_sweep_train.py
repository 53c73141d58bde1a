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
