"""A network trained on two or three independent tasks at once, for checking modules
against the tasks.

Every sample carries every task's inputs, and the hidden layers are shared
with no architectural separation; one head per task reads the last hidden
layer:

- task ``digits``: scikit-learn's 8x8 digits (64 pixels, 10 classes);
- task ``xor``: 8 Gaussian inputs ``z``, class ``2 [z0 z1 > 0] + [z2 z3 > 0]``
  (two XORs, 4 classes: nothing linear solves it);
- task ``largest`` (with ``n_tasks=3``): 8 more Gaussian inputs ``w``, class
  ``argmax_i |w_i|`` over ``w0..w3`` (4 classes). The class does not change
  when any input flips its sign, so no linear function of ``w`` tells the
  classes apart (logistic regression: 0.25 held out, chance); a unit must
  fold each input (``|w_i| = relu(w_i) + relu(-w_i)``) and compare. It is a
  different computation from the XORs (no products), on its own inputs.
  (The parity of three inputs' signs, tried first, is not learnt by this
  network in 40 epochs: 0.49-0.52 held out, seeds 0-1; parity of order 3
  gives gradient descent no lower-order signal to start from.)

The input is ``[pixels, z]`` (``[pixels, z, w]``) for a digit image paired with
independent draws of ``z`` (and ``w``). The loss is the sum of the heads'
cross-entropies. Whether hidden units split by task is up to training;
single-unit lesions (:func:`saeatlas.structure.causal.lesion.unit_lesions`)
say which task each unit serves. This is the setting of lesion studies of
modularity in networks without built-in modules (e.g. Csordás et al. 2021,
"Are neural nets modular?").
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
#: Gaussian inputs of each task after the digits (xor, largest).
N_GAUSSIAN_INPUTS = 8
#: Every task, in input and head order; a network with ``n_tasks`` has the first ``n_tasks``.
TASKS = ("digits", "xor", "largest")
N_CLASSES = (10, 4, 4)
#: Input columns of each task: the 64 pixels, then the Gaussian inputs of each further task.
TASK_INPUTS = (
    slice(0, 64),
    slice(64, 64 + N_GAUSSIAN_INPUTS),
    slice(64 + N_GAUSSIAN_INPUTS, 64 + 2 * N_GAUSSIAN_INPUTS),
)


def check_n_tasks(n_tasks: int) -> int:
    """``n_tasks`` if it is 2 or 3, else a ValueError naming the allowed values."""
    if n_tasks not in (2, 3):
        raise ValueError(f"`n_tasks` must be 2 or 3 (tasks {TASKS}), got {n_tasks!r}.")
    return n_tasks


class MultiTaskMLP(nn.Module):
    """72 inputs (80 with three tasks) -> 3 shared hidden ReLU layers -> one head per task
    (10 digit logits, 4 xor logits, 4 largest-input logits), concatenated."""

    def __init__(self, hidden: tuple[int, int, int] = (64, 48, 32), n_tasks: int = 2) -> None:
        super().__init__()
        self.n_tasks = check_n_tasks(n_tasks)
        h1, h2, h3 = hidden
        self.fc1, self.act1 = nn.Linear(TASK_INPUTS[n_tasks - 1].stop, h1), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(h1, h2), nn.ReLU()
        self.fc3, self.act3 = nn.Linear(h2, h3), nn.ReLU()
        self.head = nn.Linear(h3, sum(N_CLASSES[:n_tasks]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.fc1(x))
        x = self.act2(self.fc2(x))
        x = self.act3(self.fc3(x))
        return self.head(x)


def head_logits(output: torch.Tensor, n_tasks: int) -> list[torch.Tensor]:
    """``output [batch, sum(N_CLASSES[:n_tasks])]`` split into each head's logits."""
    return list(torch.split(output, list(N_CLASSES[:n_tasks]), dim=1))


def per_task_loss(output: torch.Tensor, batch: Any) -> torch.Tensor:
    """``[batch, n_tasks]`` cross-entropy of each head against ``batch.labels
    [batch, n_tasks]`` (the number of label columns is the number of tasks)."""
    y = torch.as_tensor(batch.labels, device=output.device).long()
    return torch.stack(
        [
            nn.functional.cross_entropy(logits, y[:, t], reduction="none")
            for t, logits in enumerate(head_logits(output, y.shape[1]))
        ],
        dim=1,
    )


def multitask_data(
    seed: int = 0, repeats: int = 2, n_tasks: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[n, 72]`` (``[n, 80]`` with three tasks): each digit image ``repeats``
    times, each with its own ``z`` (and ``w``); labels ``[n, n_tasks]`` (digit, xor
    class, largest input). ``w`` is drawn after ``z`` from the same generator, so the first
    72 columns do not depend on ``n_tasks``."""
    check_n_tasks(n_tasks)
    pixels, digit = digits_data()
    pixels, digit = np.tile(pixels, (repeats, 1)), np.tile(digit, repeats)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((len(pixels), N_GAUSSIAN_INPUTS)).astype(np.float32)
    xor = 2 * (z[:, 0] * z[:, 1] > 0) + (z[:, 2] * z[:, 3] > 0)
    inputs, labels = [pixels, z], [digit, xor]
    if n_tasks == 3:
        w = rng.standard_normal((len(pixels), N_GAUSSIAN_INPUTS)).astype(np.float32)
        inputs.append(w)
        labels.append(np.abs(w[:, :4]).argmax(1))
    return np.concatenate(inputs, axis=1), np.stack(labels, axis=1).astype(np.int64)


@torch.no_grad()
def input_dependence(model: MultiTaskMLP, x: np.ndarray, seed: int = 0) -> np.ndarray:
    """``[n_units, n_tasks]``: how much each hidden unit's activity depends on each task's
    inputs.

    Column t is the mean squared change of the unit (over all rows, units of
    ``MULTITASK_LAYERS`` in order) when task t's inputs of every row are
    replaced by those of another row, the other tasks' inputs kept. A unit
    whose activity moves with one task's inputs only is task-pure in activity,
    which is what co-activation can see; a lesion label says what the unit is
    needed for, which need not be the same.
    """
    rng = np.random.default_rng(seed)
    blocks = TASK_INPUTS[: model.n_tasks]

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
    n_tasks: int = 2,
) -> TrainedMultiTask:
    """Train :class:`MultiTaskMLP` with ``n_tasks`` heads with Adam on 4/5 of the rows,
    every task's loss at every step.

    ``l1`` weighs a penalty on the absolute weights of every layer. ``prune``
    keeps that fraction of every layer's weights by iterative magnitude pruning
    with ``finetune_epochs`` of retraining per round (:func:`.fit.prune_and_retrain`):
    with few connections left, a unit can afford to read one task's inputs only,
    so the shared layers split into units moved by one task (measured with
    :func:`input_dependence`) without any architectural separation.
    """
    x, y = multitask_data(seed, n_tasks=n_tasks)
    torch.manual_seed(seed)
    model = MultiTaskMLP(n_tasks=n_tasks)

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
    pred = np.stack([logits.argmax(1).numpy() for logits in head_logits(out, n_tasks)], axis=1)
    hit = pred == y[test]
    return TrainedMultiTask(
        model, {name: float(hit[:, t].mean()) for t, name in enumerate(TASKS[:n_tasks])}
    )


def multitask_model(seed: int = 1, prune: float | None = 0.1, n_tasks: int = 2) -> MultiTaskMLP:
    """The network :func:`train_multitask` trains (by default two tasks, pruned to 10%,
    whose hidden units fall into groups by task), for ``--model
    saeatlas.demo.multitask:multitask_model``: every call trains the same one."""
    return train_multitask(seed, prune=prune, n_tasks=n_tasks).model


@dataclass(frozen=True)
class _Labels:
    labels: torch.Tensor
