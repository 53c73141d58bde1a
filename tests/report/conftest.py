"""A small real atlas for the report tests, built once per session.

The three-task network of :mod:`saeatlas.demo.multitask` (scikit-learn's bundled
digits beside two XORs and a largest-input task, no download), pruned to 3% of its weights so that its
hidden units split into groups by task, is captured at its three hidden layers
with the digit labels; a sweep over k trains six small SAEs (two seeds each);
the recommended one is analysed with null models and row bootstraps; its
modules are ablated in the model (the digits head's loss, per digit) against
random unit sets; and the random-SAE control is stored in ``summary["control"]``.
Everything a report can show is there. ``bare_atlas`` is the same atlas with the
optional parts taken out. (The digits demo's own network has no modules: its
units' groups are no more groups than those of units moved by a few dense
factors.)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

#: Small but real: a few seconds on 2 CPU cores.
D_SAE, TOKENS, N_RANDOM = 96, 30_000, 10


@dataclass(frozen=True)
class BuiltAtlas:
    root: Path
    """Holds ``store/``, ``sweep/`` and ``atlas/`` side by side."""
    atlas_dir: Path
    sweep_dir: Path
    n_modules: int
    d_sae: int


@pytest.fixture(scope="session")
def full_atlas(tmp_path_factory) -> BuiltAtlas:
    import torch

    # Tensors this small are dominated by thread synchronisation: one thread builds the
    # atlas several times faster than two, and far faster when the cores are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def _build(tmp_path_factory) -> BuiltAtlas:
    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.demo.multitask import multitask_data, train_multitask
    from saeatlas.structure import AtlasConfig, analyze
    from saeatlas.structure.causal.ablation import ablate_atlas
    from saeatlas.sweep import sweep
    from saeatlas.train import TrainConfig

    root = tmp_path_factory.mktemp("report-atlas")
    model = train_multitask(1, prune=0.1).model  # units in groups by task
    x, labels = multitask_data(1)
    y = labels[:, 0]  # the digit
    store = capture_activations(
        model,
        x,
        ["act1", "act2", "act3"],
        root / "store",
        CaptureConfig(batch_size=512),
        labels=y,
        progress=False,
        provenance={"model": "MultiTaskMLP (report tests)"},
    )
    base = TrainConfig(d_sae=D_SAE, k=8, batch_size=256, tokens=TOKENS, seed=0)
    result = sweep(store, base, "k", [4, 8, 16], root / "sweep", seeds=2, progress=False)
    cfg = AtlasConfig(n_null=3, null_rows=2000, n_bootstrap=2, control=True)
    sae_path = result.points[result.recommended].path
    atlas = analyze(sae_path, store, cfg)
    assert atlas.n_modules >= 2, atlas.summary["message"]
    ablate_atlas(atlas, model, x, store, labels=y, loss_fn=digits_loss, n_random=N_RANDOM)
    atlas.save(root / "atlas")
    return BuiltAtlas(root, root / "atlas", root / "sweep", atlas.n_modules, D_SAE)


def digits_loss(output, batch):
    """Each row's cross-entropy of the digits head (the network's first ten outputs)."""
    import torch

    y = torch.as_tensor(batch.labels, device=output.device).long()
    return torch.nn.functional.cross_entropy(output[:, :10], y, reduction="none")


@pytest.fixture(scope="session")
def bare_atlas(full_atlas, tmp_path_factory) -> Path:
    """The same atlas without sweep, training curves, stability, control or ablation."""
    from saeatlas.structure import Atlas

    atlas = Atlas.load(full_atlas.atlas_dir)
    drop = [
        c
        for c in atlas.modules.columns
        if c.startswith(("ablation_", "stab", "reproducibility", "control_"))
    ]
    atlas.modules = atlas.modules.drop(columns=drop)
    atlas.features = atlas.features.drop(columns=["stability"], errors="ignore")
    for key in ("ablation", "stability", "control", "ensemble"):
        atlas.summary.pop(key, None)
    atlas.summary["sae"] = {**atlas.summary["sae"], "path": None}
    if hasattr(atlas, "ablation"):
        atlas.ablation = pd.DataFrame()
    out = tmp_path_factory.mktemp("bare") / "atlas"  # no sweep/ beside it
    atlas.save(out)
    return out


@pytest.fixture
def atlas_copy(full_atlas, tmp_path) -> Path:
    """A private copy of the full atlas directory (tests may damage it)."""
    return Path(shutil.copytree(full_atlas.atlas_dir, tmp_path / "atlas"))
