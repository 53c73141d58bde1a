"""The embedded default: an MLP trained on scikit-learn's bundled digits (8x8 images).

Nothing is downloaded: the data ships with scikit-learn. Training is seeded
and takes about a second on a CPU, so the demo and tests make the same
network every time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..capture import CaptureConfig, capture_activations
from ..store import ActivationStore

log = logging.getLogger(__name__)

#: The hidden layers the demo records.
DIGITS_LAYERS = ("act1", "act2", "act3")


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
    """Train :class:`DigitsMLP` with Adam on 4/5 of digits; report held-out accuracy."""
    x, y = digits_data()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = len(x) // 5
    test, train = order[:n_test], order[n_test:]
    torch.manual_seed(seed)
    model = DigitsMLP()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for s in range(0, len(xt), 64):
            idx = perm[s : s + 64]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x[test])).argmax(1).numpy()
    return TrainedDigits(model, float((pred == y[test]).mean()))


def digits_model() -> DigitsMLP:
    """Factory for ``--model saeatlas.demo.digits:digits_model`` (trained, seed 0)."""
    return train_digits().model


def run_demo(out: str | Path, *, seed: int = 0, progress: bool = True) -> ActivationStore:
    """The demo so far: train the digits network, capture its hidden layers with the
    digit labels into ``out/store``, and return the store."""
    out = Path(out)
    trained = train_digits(seed=seed)
    log.info("Digits MLP trained: held-out accuracy %.3f", trained.accuracy)
    x, y = digits_data()
    return capture_activations(
        trained.model,
        x,
        list(DIGITS_LAYERS),
        out / "store",
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
