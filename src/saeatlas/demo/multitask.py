"""A network trained on two independent tasks at once, for checking modules against lesions.

Every sample carries both tasks, and the hidden layers are shared with no
architectural separation; two heads read the last hidden layer:

- task ``digits``: scikit-learn's 8x8 digits (64 pixels, 10 classes);
- task ``xor``: 8 Gaussian inputs, class ``2 [z0 z1 > 0] + [z2 z3 > 0]`` (two
  XORs, 4 classes: nothing linear solves it).

The input is ``[pixels, z]`` for a digit image paired with an independent
draw of ``z``. The loss is the sum of the two heads' cross-entropies. Whether
hidden units split by task is up to training; single-unit lesions
(:func:`saeatlas.structure.causal.lesion.unit_lesions`) say which task each unit
serves. This is the setting of lesion studies of modularity in networks
without built-in modules (e.g. Csordás et al. 2021, "Are neural nets
modular?").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .digits import digits_data
from .fit import fit_small, prune_and_retrain

#: The hidden layers to record.
MULTITASK_LAYERS = ("act1", "act2", "act3")
N_XOR_INPUTS = 8
TASKS = ("digits", "xor")
N_CLASSES = (10, 4)


class MultiTaskMLP(nn.Module):
    """72 inputs -> 3 shared hidden ReLU layers -> 10 digit logits + 4 xor logits."""

    def __init__(self, hidden: tuple[int, int, int] = (64, 48, 32)) -> None:
        super().__init__()
        h1, h2, h3 = hidden
        self.fc1, self.act1 = nn.Linear(64 + N_XOR_INPUTS, h1), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(h1, h2), nn.ReLU()
        self.fc3, self.act3 = nn.Linear(h2, h3), nn.ReLU()
        self.head = nn.Linear(h3, sum(N_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.fc1(x))
        x = self.act2(self.fc2(x))
        x = self.act3(self.fc3(x))
        return self.head(x)


def per_task_loss(output: torch.Tensor, batch: Any) -> torch.Tensor:
    """``[batch, 2]`` cross-entropy of each head against ``batch.labels [batch, 2]``."""
    y = torch.as_tensor(batch.labels, device=output.device).long()
    a = N_CLASSES[0]
    return torch.stack(
        [
            nn.functional.cross_entropy(output[:, :a], y[:, 0], reduction="none"),
            nn.functional.cross_entropy(output[:, a:], y[:, 1], reduction="none"),
        ],
        dim=1,
    )


def multitask_data(seed: int = 0, repeats: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[n, 72]``: each digit image ``repeats`` times, each with its own ``z``;
    labels ``[n, 2]`` (digit, xor class)."""
    pixels, digit = digits_data()
    pixels, digit = np.tile(pixels, (repeats, 1)), np.tile(digit, repeats)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((len(pixels), N_XOR_INPUTS)).astype(np.float32)
    xor = 2 * (z[:, 0] * z[:, 1] > 0) + (z[:, 2] * z[:, 3] > 0)
    return np.concatenate([pixels, z], axis=1), np.stack([digit, xor], axis=1).astype(np.int64)


@torch.no_grad()
def input_dependence(model: MultiTaskMLP, x: np.ndarray, seed: int = 0) -> np.ndarray:
    """``[n_units, 2]``: how much each hidden unit's activity depends on each task's inputs.

    Column t is the mean squared change of the unit (over all rows, units of
    ``MULTITASK_LAYERS`` in order) when task t's inputs of every row are
    replaced by those of another row, the other task's inputs kept. A unit
    whose activity moves with one task's inputs only is task-pure in activity,
    which is what co-activation can see; a lesion label says what the unit is
    needed for, which need not be the same.
    """
    rng = np.random.default_rng(seed)
    blocks = (slice(0, 64), slice(64, x.shape[1]))

    def hidden(rows: np.ndarray) -> torch.Tensor:
        out: list[torch.Tensor] = []
        hooks = [
            getattr(model, n).register_forward_hook(lambda m, i, o: out.append(o))
            for n in MULTITASK_LAYERS
        ]
        try:
            model(torch.from_numpy(rows))
        finally:
            for h in hooks:
                h.remove()
        return torch.cat(out, dim=1)

    base = hidden(x)
    cols = []
    for block in blocks:
        swapped = x.copy()
        swapped[:, block] = x[rng.permutation(len(x)), block]
        cols.append(((hidden(swapped) - base) ** 2).mean(0))
    return torch.stack(cols, dim=1).numpy()


@dataclass(frozen=True)
class TrainedMultiTask:
    model: MultiTaskMLP
    accuracy: dict[str, float]
    """Held-out accuracy per task."""


def train_multitask(
    seed: int = 0,
    epochs: int = 40,
    l1: float = 0.0,
    prune: float | None = None,
    prune_rounds: int = 3,
    finetune_epochs: int = 20,
) -> TrainedMultiTask:
    """Train :class:`MultiTaskMLP` with Adam on 4/5 of the rows, both losses at every step.

    ``l1`` weighs a penalty on the absolute weights of every layer. ``prune``
    keeps that fraction of every layer's weights by iterative magnitude pruning
    with ``finetune_epochs`` of retraining per round (:func:`.fit.prune_and_retrain`):
    with few connections left, a unit can afford to read one task's inputs only,
    so the shared layers split into units moved by one task (measured with
    :func:`input_dependence`) without any architectural separation.
    """
    x, y = multitask_data(seed)
    torch.manual_seed(seed)
    model = MultiTaskMLP()

    def loss_fn(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = per_task_loss(m(xb), _Labels(yb)).sum(1).mean()
        if l1:
            layers = (m.fc1, m.fc2, m.fc3, m.head)
            loss = loss + l1 * sum(f.weight.abs().sum() for f in layers)
        return loss

    test = fit_small(model, x, y, loss_fn, seed=seed, epochs=epochs)
    if prune is not None:
        layers = (model.fc1, model.fc2, model.fc3, model.head)
        # the same seed keeps the same held-out rows out of the retraining
        prune_and_retrain(
            layers,
            prune,
            prune_rounds,
            lambda: fit_small(model, x, y, loss_fn, seed=seed, epochs=finetune_epochs),
        )
    with torch.no_grad():
        out = model(torch.from_numpy(x[test]))
    a = N_CLASSES[0]
    pred = np.stack([out[:, :a].argmax(1).numpy(), out[:, a:].argmax(1).numpy()], axis=1)
    hit = pred == y[test]
    return TrainedMultiTask(model, {name: float(hit[:, t].mean()) for t, name in enumerate(TASKS)})


@dataclass(frozen=True)
class _Labels:
    labels: torch.Tensor
