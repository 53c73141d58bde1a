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


def _no_average(state):
    state["opt"]["param_groups"][0]["weight_sum"] = 1e-9
    return state


@pytest.mark.parametrize(
    "edit, needle",
    [
        (_one_counter, "`rows_since_fired` is (1,), not one count per latent"),
        (_no_metrics, "`metrics` holds 0 records; the run logged 1 in 5 steps"),
        (_no_average, "`opt` weight_sum is 1e-09, not "),
    ],
)
def test_a_checkpoint_of_too_few_counters_records_or_steps_is_refused(
    run_cli, resume_edited, edit, needle
):
    """A checkpoint whose dead-latent counters were edited to one number (`[0]`) was
    continued from with that number copied into every latent's counter (another SAE,
    without a word), and one whose metrics records were dropped wrote a metrics.jsonl
    without them (the records were checked for order, not for being all there); and the
    schedule-free average's sum of squared learning rates (`weight_sum`) edited to about
    0 put the average at the last iterate and trained another SAE."""
    _, one_line = run_cli
    one_line(resume_edited(edit), "not a state it can continue from", needle)
