"""Twenty-fifth hostile sweep, training, sweeps, the SAE's files and `evaluate`: each
case failed (a traceback, a wrong result or a misleading word) before its fix."""

from __future__ import annotations

import pytest
import torch


def _one_counter(state):
    state["rows_since_fired"] = torch.tensor([0])
    return state


def _no_metrics(state):
    state["metrics"] = []
    return state


@pytest.mark.parametrize(
    "edit, needle",
    [
        (_one_counter, "`rows_since_fired` is (1,), not one count per latent"),
        (_no_metrics, "`metrics` holds 0 records; the run logged 1 in 5 steps"),
    ],
)
def test_a_checkpoint_of_too_few_counters_or_records_is_refused(
    run_cli, resume_edited, edit, needle
):
    """A checkpoint whose dead-latent counters were edited to one number (`[0]`) was
    continued from with that number copied into every latent's counter (another SAE,
    without a word), and one whose metrics records were dropped wrote a metrics.jsonl
    without them (the records were checked for order, not for being all there)."""
    _, one_line = run_cli
    one_line(resume_edited(edit), "not a state it can continue from", needle)
