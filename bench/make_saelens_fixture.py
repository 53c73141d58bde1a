#!/usr/bin/env python3
"""Make tiny SAELens-written SAE fixtures plus SAELens reference outputs.

What it does
------------
1. Creates (once) a private virtual environment ``bench/.venv-saelens`` with
   ``python3 -m venv`` and installs into it, in this order,
   ``torch==2.13.0`` (a CPU build that pip takes from local disk) and then
   ``sae-lens==6.54.12`` (with ``torch==2.13.0`` repeated on the same pip
   command line so that pip can never swap in another torch build).
   Nothing is installed into the project's own ``.venv``.
2. Re-executes itself with that venv's interpreter and, using the real
   SAELens library, builds tiny SAEs (d_in=16, d_sae=32, float32, cpu) for
   each architecture and saves each with SAELens's own save method into
   ``tests/fixtures/saelens/<name>/`` (``cfg.json`` + ``sae_weights.safetensors``):

   - ``standard``: StandardSAEConfig / StandardSAE (ReLU; the L1 penalty is
     training-only) -> ``sae.save_model``; architecture "standard".
   - ``topk``: TopKSAEConfig(k=4) / TopKSAE -> ``save_model``; "topk".
   - ``topk_rescale``: TopKSAEConfig(k=4, rescale_acts_by_decoder_norm=True)
     / TopKSAE -> ``save_model``; "topk".
   - ``jumprelu``: JumpReLUSAEConfig / JumpReLUSAE -> ``save_model``;
     "jumprelu".
   - ``batchtopk``: BatchTopKTrainingSAEConfig(k=4) / BatchTopKTrainingSAE ->
     ``save_inference_model``; saved as "jumprelu" (SAELens has no
     inference BatchTopK class).

   ``apply_b_dec_to_input`` and ``normalize_activations`` are left at their
   SAELens defaults (True and "none"); the script asserts that.
3. Writes ``reference.safetensors`` into each folder with ``x`` (the fixed
   input ``torch.randn(20, 16, generator=torch.Generator().manual_seed(1)) * 2
   + 0.5``), ``feature_acts`` (SAELens ``sae.encode(x)``), ``reconstruction``
   (SAELens ``sae.decode(feature_acts)``) and ``forward`` (``sae(x)``) only if
   that differs from ``reconstruction``.  For ``batchtopk`` the reference is
   that of the saved inference (JumpReLU) SAE as loaded back by SAELens, and
   the batch-level BatchTopK training-mode outputs are added as
   ``train_feature_acts`` / ``train_reconstruction``.
4. Loads every saved folder back with ``SAE.load_from_disk`` and checks it
   reproduces the saved reference to 1e-6 (printed; exits non-zero on failure).

The folders are deleted and rewritten on every run (idempotent);
``tests/fixtures/saelens/README.md`` (hand-written; documents the maths) is
not touched.

How to run (from anywhere; the first run spends a minute or more installing)::

    python3 bench/make_saelens_fixture.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SAE_LENS_VERSION = "6.54.12"
TORCH_VERSION = "2.13.0"

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / "bench" / ".venv-saelens"
VENV_PY = VENV / "bin" / "python"
FIXTURES = REPO / "tests" / "fixtures" / "saelens"
INNER_FLAG = "--inside-saelens-venv"

D_IN = 16
D_SAE = 32
K = 4
TOL = 1e-6


# --------------------------------------------------------------------------
# Outer part: runs under any python3, builds the venv, re-executes itself.
# --------------------------------------------------------------------------
def _installed_version(dist: str) -> str | None:
    code = (
        "import importlib.metadata as m, sys\n"
        "try:\n"
        f"    print(m.version({dist!r}))\n"
        "except m.PackageNotFoundError:\n"
        "    sys.exit(3)\n"
    )
    res = subprocess.run([str(VENV_PY), "-c", code], capture_output=True, text=True, check=False)
    return res.stdout.strip() if res.returncode == 0 else None


def _pip(*args: str) -> None:
    cmd = [str(VENV_PY), "-m", "pip", "install", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def bootstrap() -> None:
    if not VENV_PY.exists():
        print(f"creating venv {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    torch_v = _installed_version("torch")
    if torch_v is None or torch_v.split("+")[0] != TORCH_VERSION:
        # torch first, on its own, so pip takes the local CPU wheel.
        _pip(f"torch=={TORCH_VERSION}")
    if _installed_version("sae-lens") != SAE_LENS_VERSION:
        # repeat the torch pin so resolving sae-lens's dependencies can
        # never replace the CPU torch with another (multi-GB CUDA) build.
        _pip(f"sae-lens=={SAE_LENS_VERSION}", f"torch=={TORCH_VERSION}")
    args = [str(VENV_PY), str(Path(__file__).resolve()), INNER_FLAG, *sys.argv[1:]]
    sys.stdout.flush()
    # fixed hash seed: SAELens builds the batchtopk cfg.json from a set, so
    # its key order (and the file's bytes) would otherwise vary run to run.
    os.execve(str(VENV_PY), args, {**os.environ, "PYTHONHASHSEED": "0"})


# --------------------------------------------------------------------------
# Inner part: runs inside bench/.venv-saelens with SAELens importable.
# --------------------------------------------------------------------------
def inner() -> int:  # noqa: PLR0915 - a linear script
    import importlib.metadata as md
    import shutil
    import warnings

    import sae_lens
    import torch
    from sae_lens import SAE
    from sae_lens.saes import (
        BatchTopKTrainingSAE,
        BatchTopKTrainingSAEConfig,
        JumpReLUSAE,
        JumpReLUSAEConfig,
        StandardSAE,
        StandardSAEConfig,
        TopKSAE,
        TopKSAEConfig,
    )
    from safetensors.torch import load_file, save_file

    warnings.filterwarnings("ignore")
    torch.set_grad_enabled(False)

    sl_version = md.version("sae-lens")
    print(f"sae-lens {sl_version} (sae_lens.__version__={sae_lens.__version__})")
    print(f"torch {torch.__version__}")
    print(f"sae_lens package at {Path(sae_lens.__file__).parent}")
    assert sl_version == SAE_LENS_VERSION, sl_version

    FIXTURES.mkdir(parents=True, exist_ok=True)
    x = torch.randn(20, D_IN, generator=torch.Generator().manual_seed(1)) * 2 + 0.5

    # One global seed; parameters are drawn in the fixed order of SPECS below,
    # so every run produces bit-identical fixtures.
    torch.manual_seed(0)

    def random_params(with_threshold: bool, b_enc_mean: float = -0.5) -> dict[str, torch.Tensor]:
        """Non-trivial seeded parameters; about a third to half of latents fire."""
        W_enc = torch.randn(D_IN, D_SAE) / D_IN**0.5  # hidden_pre std ~ 2
        b_enc = torch.randn(D_SAE) * 0.5 + b_enc_mean
        # decoder rows with unequal norms (0.5 .. 1.5) so norm folding matters
        W_dec = torch.randn(D_SAE, D_IN) / D_IN**0.5
        W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
        W_dec = W_dec * (0.5 + torch.rand(D_SAE, 1))
        b_dec = torch.randn(D_IN) * 0.5
        p = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
        if with_threshold:
            thr = 0.25 + torch.rand(D_SAE)  # in [0.25, 1.25)
            # edge cases of SAELens's JumpReLU (relu(h) * (h > thr)):
            thr[0] = 0.0  # plain ReLU latent
            thr[1] = -0.5  # negative threshold: relu still zeroes h in (t, 0]
            b_enc[:2] = 0.0  # so h of latents 0, 1 straddles 0 on x
            p["threshold"] = thr
        return p

    def set_params(sae, params: dict[str, torch.Tensor]) -> None:
        for name, value in params.items():
            param = getattr(sae, name)
            assert param.shape == value.shape, (name, param.shape, value.shape)
            param.data.copy_(value)

    def check_defaults(cfg) -> None:
        assert cfg.apply_b_dec_to_input is True, cfg.apply_b_dec_to_input
        assert cfg.normalize_activations == "none", cfg.normalize_activations
        assert cfg.reshape_activations == "none", cfg.reshape_activations

    def write_reference(folder: Path, sae, extra: dict[str, torch.Tensor] | None = None):
        feature_acts = sae.encode(x)
        reconstruction = sae.decode(feature_acts)
        forward = sae(x)
        tensors = {
            "x": x.contiguous(),
            "feature_acts": feature_acts.contiguous(),
            "reconstruction": reconstruction.contiguous(),
        }
        fwd_diff = (forward - reconstruction).abs().max().item()
        if fwd_diff != 0.0:
            tensors["forward"] = forward.contiguous()
        if extra:
            tensors.update({k: v.contiguous() for k, v in extra.items()})
        save_file(
            tensors,
            str(folder / "reference.safetensors"),
            # one key only: safetensors writes metadata in hash-map order
            metadata={
                "made_by": f"sae-lens {sl_version}, torch {torch.__version__}, "
                "bench/make_saelens_fixture.py; x = torch.randn(20, 16, "
                "generator=torch.Generator().manual_seed(1)) * 2 + 0.5"
            },
        )
        nnz = (feature_acts != 0).sum(dim=-1).float()
        if hasattr(sae, "threshold"):
            h = sae.process_sae_in(x) @ sae.W_enc + sae.b_enc
            neg = sae.threshold < 0
            n_clip = ((h > sae.threshold) & (h <= 0) & neg).sum().item()
            n_zero = ((h > 0) & (sae.threshold == 0)).sum().item()
            print(
                f"  edge cases on x: {n_clip} pre-acts in (threshold<0, 0] zeroed "
                f"by relu; {n_zero} pre-acts > 0 on threshold==0 latents"
            )
        print(
            f"  reference: L0 per row mean={nnz.mean():.2f} min={nnz.min():.0f} "
            f"max={nnz.max():.0f}; forward==decode(encode(x)): "
            f"{'yes (forward not stored)' if fwd_diff == 0.0 else f'NO, diff {fwd_diff:.3g}'}"
        )

    def fresh(name: str) -> Path:
        folder = FIXTURES / name
        if folder.exists():
            shutil.rmtree(folder)
        return folder

    # ---- standard -------------------------------------------------------
    folder = fresh("standard")
    cfg = StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, dtype="float32", device="cpu")
    check_defaults(cfg)
    sae = StandardSAE(cfg)
    set_params(sae, random_params(with_threshold=False))
    print("standard: StandardSAE.save_model")
    sae.save_model(folder)
    write_reference(folder, sae)

    # ---- topk -----------------------------------------------------------
    for name, rescale in (("topk", False), ("topk_rescale", True)):
        folder = fresh(name)
        cfg = TopKSAEConfig(
            d_in=D_IN,
            d_sae=D_SAE,
            k=K,
            rescale_acts_by_decoder_norm=rescale,
            dtype="float32",
            device="cpu",
        )
        check_defaults(cfg)
        sae = TopKSAE(cfg)
        # negative-leaning b_enc so that some rows have fewer than k positive
        # pre-activations: SAELens's TopK then keeps relu(value) = 0 there.
        set_params(sae, random_params(with_threshold=False, b_enc_mean=-2.0))
        print(f"{name}: TopKSAE(rescale_acts_by_decoder_norm={rescale}).save_model")
        sae.save_model(folder)
        write_reference(folder, sae)

    # ---- jumprelu -------------------------------------------------------
    folder = fresh("jumprelu")
    cfg = JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, dtype="float32", device="cpu")
    check_defaults(cfg)
    sae = JumpReLUSAE(cfg)
    set_params(sae, random_params(with_threshold=True))
    print("jumprelu: JumpReLUSAE.save_model")
    sae.save_model(folder)
    write_reference(folder, sae)

    # ---- batchtopk (training-only in SAELens; saved as jumprelu) ---------
    folder = fresh("batchtopk")
    cfg = BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, dtype="float32", device="cpu")
    check_defaults(cfg)
    print(
        "batchtopk: BatchTopKTrainingSAE(rescale_acts_by_decoder_norm="
        f"{cfg.rescale_acts_by_decoder_norm}).save_inference_model"
    )
    train_sae = BatchTopKTrainingSAE(cfg)
    params = random_params(with_threshold=False)
    set_params(train_sae, params)
    train_acts = train_sae.encode(x)  # batch-level top (k * 20) over all rows
    train_recon = train_sae.decode(train_acts)
    # A trained BatchTopK SAE stores an EMA of the smallest positive batch
    # activation in `topk_threshold`; use just under that value here so the
    # saved JumpReLU keeps every latent that BatchTopK kept on x.
    min_pos = train_acts[train_acts > 0].min().double()
    train_sae.topk_threshold = (min_pos * 0.9).to(train_sae.topk_threshold)
    print(f"  topk_threshold set to {train_sae.topk_threshold.item():.6f}")
    train_sae.save_inference_model(folder)
    inf_sae = SAE.load_from_disk(folder, device="cpu")
    assert isinstance(inf_sae, JumpReLUSAE), type(inf_sae)
    write_reference(
        folder,
        inf_sae,
        extra={"train_feature_acts": train_acts, "train_reconstruction": train_recon},
    )
    inf_acts = inf_sae.encode(x)
    kept = train_acts != 0
    d = (inf_acts[kept] - train_acts[kept]).abs().max().item()
    print(
        f"  saved JumpReLU keeps all {int(kept.sum())} BatchTopK activations "
        f"(max diff {d:.2e}) and adds {int(((inf_acts != 0) & ~kept).sum())} more"
    )
    assert d < 1e-5

    # ---- verification: reload with SAELens's own loader -----------------
    print(f"\nverify: SAE.load_from_disk(...) vs reference.safetensors (tol {TOL})")
    ok = True
    for folder in sorted(p for p in FIXTURES.iterdir() if p.is_dir()):
        ref = load_file(str(folder / "reference.safetensors"))
        sae = SAE.load_from_disk(folder, device="cpu")
        acts = sae.encode(ref["x"])
        recon = sae.decode(ref["feature_acts"])
        fwd = sae(ref["x"])
        e_acts = (acts - ref["feature_acts"]).abs().max().item()
        e_recon = (recon - ref["reconstruction"]).abs().max().item()
        e_fwd = (fwd - ref.get("forward", ref["reconstruction"])).abs().max().item()
        good = max(e_acts, e_recon, e_fwd) <= TOL
        ok &= good
        files = ", ".join(f"{p.name}={p.stat().st_size}B" for p in sorted(folder.iterdir()))
        print(
            f"  {folder.name:13s} {type(sae).__name__:12s} encode {e_acts:.1e} "
            f"decode {e_recon:.1e} forward {e_fwd:.1e} -> "
            f"{'OK' if good else 'FAIL'}  [{files}]"
        )
    print("ALL OK" if ok else "VERIFICATION FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if INNER_FLAG in sys.argv:
        sys.argv.remove(INNER_FLAG)
        sys.exit(inner())
    bootstrap()
