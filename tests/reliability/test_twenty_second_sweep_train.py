"""Twenty-second hostile sweep, training, the SAE's files and their use: each case
failed (a traceback, a wrong result or a misleading word) before its fix."""

from __future__ import annotations

import numpy as np
import torch

from saeatlas.evaluate import evaluate_sae
from saeatlas.sae import SAEConfig, SparseAutoencoder


def test_a_unit_held_at_1e20_does_not_hide_the_others_variance(tmp_path):
    """`evaluate` of a store with one unit constant at 1e20 said "Rows 0:300 do not vary
    (every row is the same)": the rounding floor was judged against the whole row's sum
    of squares, which that unit alone made 1e40 times the others' variance."""
    x = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    x[:, 3] = 0
    sae = SparseAutoencoder(SAEConfig(d_in=6, d_sae=8, k=2), torch.Generator().manual_seed(0))
    with torch.no_grad():  # the SAE gives unit 3 its constant value back, exactly
        sae.W_dec[:, 3] = 0
        sae.W_enc[3] = 0  # and the latents do not read it
    np.save(tmp_path / "plain.npy", x)
    plain = evaluate_sae(sae, tmp_path / "plain.npy")
    x[:, 3] = 1e20
    with torch.no_grad():
        sae.b_dec[3] = 1e20
    np.save(tmp_path / "held.npy", x)
    held = evaluate_sae(sae, tmp_path / "held.npy")
    assert np.isclose(held.fvu, plain.fvu, rtol=1e-6) and held.l0 == plain.l0
