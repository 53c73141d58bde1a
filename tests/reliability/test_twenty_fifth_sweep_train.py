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


def test_a_swept_k_above_the_default_d_sae_names_values(guarded, run_cli, tmp_path):
    """`sweep --values 4 200` with the default `d_sae` (8 x 18 units = 144) was told to
    "Lower `k` (--k)", a flag that sweep refuses beside --over k (with --d-sae given, the
    same value was named as one of --values)."""
    cli, one_line = run_cli
    args = ["--acts", guarded.store, "--out", tmp_path / "sw", "--tokens", "640", "-q"]
    r = cli("sweep", *args, "--values", "4", "200", "--batch-size", "32")
    line = one_line(r, "`k` (200) cannot exceed `d_sae` (144", "Lower `k` (--values)")
    assert "--k" not in line and not any(tmp_path.iterdir())


def test_train_ensemble_takes_a_numpy_number_of_seeds(tmp_path):
    """`train_ensemble(store, cfg, out, np.int64(2))` was refused as "`n_seeds` must be an
    integer, got np.int64(2)" (`sweep` takes NumPy numbers for its settings)."""
    import numpy as np

    from saeatlas.train import TrainConfig, train_ensemble

    np.save(tmp_path / "a.npy", np.random.default_rng(0).normal(size=(64, 6)).astype("f4"))
    cfg = TrainConfig(d_sae=8, k=2, batch_size=32, tokens=64)
    result = train_ensemble(tmp_path / "a.npy", cfg, tmp_path / "sae", np.int64(2), progress=False)
    assert len(result.results) == 2 and (tmp_path / "sae-seed1" / "cfg.json").is_file()
    with pytest.raises(TypeError, match="`n_seeds` must be an integer, got 2.0"):
        train_ensemble(tmp_path / "a.npy", cfg, tmp_path / "other", 2.0, progress=False)


def test_only_rank_0_of_a_sweep_warns(caplog):
    """Under `torchrun` every rank of a sweep printed its warnings (the knee at an end of
    the range, a recommended member of low stability): each line came once per rank."""
    from types import SimpleNamespace

    from saeatlas._world import World
    from saeatlas.sweep.sweep import _sweep

    def members(rank):
        points = [(v, f"k-{v}", 1 / v, float(v), 0.0, 0.5, 16) for v in (2, 4)]
        return SimpleNamespace(
            over="k", heldout=8, new=None, members=[], world=World(rank, 2), train=lambda _: points
        )

    for rank, expected in ((1, 0), (0, 2)):
        caplog.clear()
        with caplog.at_level("INFO"):
            _sweep(members(rank), [2, 4], extend=0)
        assert len([r for r in caplog.records if r.levelname == "WARNING"]) == expected


def test_a_sweep_config_s_heldout_rows_is_not_passed_over(guarded, run_cli, tmp_path, caplog):
    """`sweep --config FILE` whose file sets `heldout_rows: 300` held out the sweep's 10%
    of the rows in every member, without a word (the flag --heldout-rows is refused, and
    the swept setting in the file is warned of)."""
    cli, _ = run_cli
    config = tmp_path / "train.yaml"
    config.write_text("d_sae: 8\ntokens: 64\nbatch_size: 32\nheldout_rows: 300\n")
    args = ["--acts", guarded.store, "--out", tmp_path / "sw", "--values", "2", "3"]
    with caplog.at_level("WARNING"):
        r = cli("sweep", *args, "--config", config, "--seeds", "1", "--extend", "0", "-q")
    assert r.exit_code == 0, r.output
    assert "`heldout_rows: 300` in" in caplog.text, caplog.text
    assert "takes its heldout_rows from --heldout-fraction" in caplog.text


def test_a_sweep_of_whole_numbers_extends_by_half_the_smallest():
    """`sweep(..., "l1_coefficient", [1, 2])` from Python (whole numbers), whose knee lay at
    the low end, recorded the range as extended by 0.5 but trained the new member with
    `int(0.5)`, an L1 coefficient of 0 (no penalty at all), saved as `l1_coefficient-0.0`
    with the value 0 in sweep.json."""
    from types import SimpleNamespace

    from saeatlas._world import World
    from saeatlas.sweep.sweep import _sweep

    trained = []
    fvu = {1: 0.2, 2: 0.5, 0.5: 0.1}  # a knee at the low end of 1 and 2

    def train(values):
        trained.extend(values)
        return [(float(v), f"m-{v}", fvu[v], 4 / v, 0.0, None, 8) for v in values]

    members = SimpleNamespace(
        over="l1_coefficient", heldout=8, new=None, members=[], world=World(), train=train
    )
    result = _sweep(members, [1, 2], extend=1)
    assert trained == [1, 2, 0.5] and result.extended == (0.5,)
    assert [p.value for p in result.points] == [1.0, 2.0, 0.5]
