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
