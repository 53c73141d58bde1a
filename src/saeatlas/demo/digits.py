"""The embedded default: an MLP trained on scikit-learn's bundled digits (8x8 images).

Nothing is downloaded: the data ships with scikit-learn. Training is seeded
and takes about a second on a CPU, so the demo and tests make the same
network every time. :func:`run_demo` runs the whole pipeline on it
(:func:`~saeatlas.pipeline.run_pipeline` with :func:`digits_config`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._validation import check_flag_argument
from ..capture import CaptureConfig, capture_activations
from ..pipeline import (
    AblationSection,
    RunConfig,
    RunResult,
    StabilitySection,
    StageOutcome,
    SweepSection,
    run_pipeline,
)
from ..store import ActivationStore
from ..structure import AtlasConfig
from ..train import TrainConfig
from .fit import fit_small

log = logging.getLogger(__name__)

#: The hidden layers the demo records.
DIGITS_LAYERS = ("act1", "act2", "act3")
#: The demo's SAE width, training budget in rows, and the k values its sweep tries.
DEMO_D_SAE = 1024
DEMO_TOKENS = 100_000
DEMO_K_VALUES = (8, 16, 32, 64)
#: The digits network's own seed. The demo's --seed varies the analysis (SAE training,
#: bootstraps, null and ablation draws), never the network: two demo runs with other
#: seeds are two analyses of one network, so their atlases can be compared.
DEMO_NETWORK_SEED = 0


class DigitsMLP(nn.Module):
    """64 pixels -> 3 hidden ReLU layers -> 10 classes; hook points ``fc1`` ... ``head``."""

    def __init__(self, hidden: tuple[int, int, int] = (64, 48, 32)) -> None:
        super().__init__()
        h1, h2, h3 = hidden
        self.fc1, self.act1 = nn.Linear(64, h1), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(h1, h2), nn.ReLU()
        self.fc3, self.act3 = nn.Linear(h2, h3), nn.ReLU()
        self.head = nn.Linear(h3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.fc1(x))
        x = self.act2(self.fc2(x))
        x = self.act3(self.fc3(x))
        return self.head(x)


def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """Digits images as float32 rows ``[1797, 64]`` scaled to [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


@dataclass(frozen=True)
class TrainedDigits:
    model: DigitsMLP
    accuracy: float
    """Accuracy on the held-out fifth of the data."""


def train_digits(seed: int = 0, epochs: int = 60) -> TrainedDigits:
    """Train :class:`DigitsMLP` with Adam on 4/5 of digits; report held-out accuracy.

    Runs on one CPU thread: batches of 64 rows are as fast on one thread as on
    more, several times faster when other processes share the cores, and the
    weights are the same on every machine."""
    x, y = digits_data()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = DigitsMLP()

        def loss_fn(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return nn.functional.cross_entropy(m(xb), yb)

        test = fit_small(model, x, y, loss_fn, seed=seed, epochs=epochs)
        with torch.no_grad():
            pred = model(torch.from_numpy(x[test])).argmax(1).numpy()
    finally:
        torch.set_num_threads(threads)
    return TrainedDigits(model, float((pred == y[test]).mean()))


def digits_model(seed: int = 0, epochs: int = 60) -> DigitsMLP:
    """Factory for ``--model saeatlas.demo.digits:digits_model`` (trained, seeded)."""
    return train_digits(seed=seed, epochs=epochs).model


def capture_digits(out: str | Path, *, seed: int = 0, progress: bool = True) -> ActivationStore:
    """Train the digits network and capture its hidden layers, with the digit labels,
    into the store ``out`` (replacing one there); return the store."""
    trained = train_digits(seed=seed)
    log.info("Digits MLP trained: held-out accuracy %.3f", trained.accuracy)
    x, y = digits_data()
    return capture_activations(
        trained.model,
        x,
        list(DIGITS_LAYERS),
        out,
        CaptureConfig(batch_size=256),
        labels=y,
        overwrite=True,
        progress=progress,
        provenance={
            "model": "DigitsMLP (saeatlas demo)",
            "inputs": "sklearn digits",
            "accuracy": trained.accuracy,
            "seed": seed,
        },
    )


def digits_config(*, seed: int = 0, quick: bool = False) -> RunConfig:
    """The demo's run config (``examples/digits.yaml`` is the same at seed 0).

    ``quick``: the tests' size (a shorter MLP training, a two-point sweep with one
    seed, fewer null draws and random unit sets, no stability runs or control).
    """
    check_flag_argument("quick", quick)  # `quick="no"` was read by its truth
    train = TrainConfig(
        d_sae=DEMO_D_SAE,
        batch_size=256,
        tokens=60_000 if quick else DEMO_TOKENS,
        seed=seed,
    )
    return RunConfig(
        model="saeatlas.demo.digits:digits_model",
        model_args={"seed": DEMO_NETWORK_SEED, "epochs": 20 if quick else 60},
        inputs="saeatlas.demo.digits:digits_data",
        layers=DIGITS_LAYERS,
        # batches of 256 x 144 units: one thread is as fast as two, and not slowed
        # several-fold when other processes share the cores
        threads=1,
        capture=CaptureConfig(batch_size=256),
        sweep=SweepSection(
            over="k",
            values=(8, 16) if quick else DEMO_K_VALUES,
            seeds=1 if quick else 2,
            extend=1 if quick else 3,
        ),
        train=train,
        stability=StabilitySection(n_seed_saes=1 if quick else 2),
        analyze=AtlasConfig(
            n_null=3 if quick else 10,
            n_bootstrap=1,
            control=not quick,
            seed=seed,
        ),
        ablation=AblationSection(enabled=True, n_random=20 if quick else None, seed=seed),
    )


def run_demo(
    out: str | Path,
    *,
    seed: int = 0,
    quick: bool = False,
    progress: bool = True,
    on_stage: Callable[[StageOutcome], None] | None = None,
    timeout_s: float = 1800.0,
    overwrite: bool = False,
) -> RunResult:
    """The demo: :func:`run_pipeline` on the digits network (:func:`digits_config`).

    Trains the MLP, captures its three hidden layers with the digit labels,
    sweeps k, trains the joint SAE over all layers, maps its modules (with null
    models, stability and the random-SAE control), ablates each module per
    digit class against random unit sets, and writes the report. Stages already
    complete in ``out`` with the same settings are skipped; those of other settings
    (another ``seed`` or ``quick``) are replaced only with ``overwrite``. Under
    ``torchrun`` the ranks share it as :func:`run_pipeline` says (``timeout_s``: its
    meetings).
    """
    return run_pipeline(
        digits_config(seed=seed, quick=quick),
        out,
        progress=progress,
        on_stage=on_stage,
        timeout_s=timeout_s,
        overwrite=overwrite,
    )
