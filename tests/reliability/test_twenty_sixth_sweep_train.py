"""Twenty-sixth hostile sweep, training, sweeps, checkpoints and the SAE's files: each
case failed (a traceback, a wrong result or a lost file) before its fix."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def acts(tmp_path):
    """64 rows x 6 units as a .npy."""
    path = tmp_path / "a.npy"
    np.save(path, np.random.default_rng(0).normal(size=(64, 6)).astype("f4"))
    return path


#: A short training of 6 -> 12 latents.
SMALL = ("--d-sae", "12", "--k", "2", "--batch-size", "32", "--tokens", "64", "-q")


def test_seeds_that_fit_alone_but_not_together_are_refused(run_cli, acts, tmp_path, monkeypatch):
    """`train --seeds 3` (and a sweep) trains its SAEs at once, holding all their weights,
    but each was checked alone against the machine's memory: seeds that each fit and
    together did not were trained until the OOM killer stopped the command."""
    import saeatlas.train.run as run

    monkeypatch.setattr(run, "memory_bytes", lambda device: 20_000)  # one SAE needs 11,520
    cli, one_line = run_cli
    r = cli("train", "--acts", acts, "--out", tmp_path / "sae", "--seeds", "3", *SMALL)
    one_line(r, "3 SAEs trained at once", "Lower the number of SAEs trained at once (--seeds")
    assert not (tmp_path / "sae").exists()
    run.check_fits(6, 12, 32, "cpu")  # one of them fits


@pytest.mark.parametrize("text", ["lr: 1.0e+400", "lr: -1.0E+400", "grad_clip: 2.5e+999"])
def test_a_yaml_number_beyond_a_float_is_named_as_written(run_cli, acts, tmp_path, text):
    """`lr: 1.0e+400` in a YAML config (a float to YAML, where `1e400` is text) was read as
    infinity and refused as "`lr` must be a finite number, got inf", a value nobody wrote
    (`1e400` was named as written)."""
    cli, one_line = run_cli
    (tmp_path / "c.yaml").write_text(text + "\n")
    r = cli("train", "--acts", acts, "--out", tmp_path / "sae", "--config", tmp_path / "c.yaml")
    one_line(r, f"{text.split(': ')[1]} is beyond the largest number a float holds")
    assert not (tmp_path / "sae").exists()


def test_run_check_counts_the_saes_the_run_trains_at_once(outputs, tmp_path, run_cli, monkeypatch):
    """`run --check` checked one SAE against the machine's memory where the run trains
    the SAE and its seed SAEs (`stability.n_seed_saes`) at once: it called valid a run
    that then ran out of memory after its capture."""
    import saeatlas.train.run as run

    monkeypatch.setattr(run, "memory_bytes", lambda device: 40_000)  # one SAE needs 17,408
    cli, one_line = run_cli
    config = tmp_path / "run.yaml"
    head = f"model: {outputs.model}\ninputs: {outputs.inputs}\nlayers: ['1']\n"
    train = "sweep: {enabled: false}\ntrain: {d_sae: 16, k: 2, tokens: 512, batch_size: 64}\n"
    config.write_text(head + train + "stability: {n_seed_saes: 2}\n")
    r = cli("run", config, "--check", "--out", tmp_path / "run")
    one_line(r, "3 SAEs trained at once", "`stability.n_seed_saes`")
    config.write_text(head + train + "stability: {n_seed_saes: 0}\n")
    r = cli("run", config, "--check", "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output


def test_validate_counts_its_saes_trained_at_once(run_cli, forbid, monkeypatch):
    """`validate` checked one SAE against the machine's memory before its cases, but trains
    three at once: SAEs that fit alone and not together drew the first case's planted
    rows, then ran out of memory (or, with the family's check, were told of --seeds and
    --batch-size, flags validate does not have)."""
    import saeatlas.train.run as run
    from saeatlas.structure.synthetic import validate

    monkeypatch.setattr(run, "memory_bytes", lambda device: 20_000_000)  # one needs 8,650,752
    forbid(validate, "validate_case")
    cli, one_line = run_cli
    r = cli("validate", "--cases", "easy", "--rows", "1024")
    line = one_line(r, "3 SAEs trained at once, each of 512 latents on 144 units", "Lower --d-sae.")
    assert "--seeds" not in line and "--batch-size" not in line


def test_torchrun_ranks_on_the_cpu_count_each_copy_of_the_sae(monkeypatch):
    """Under `torchrun --nproc_per_node 2` on the CPU every rank holds its own SAE and
    optimiser in the machine's one memory, but each checked one copy against all of it:
    an SAE that fit once and not twice was trained until the OOM killer stopped it."""
    import saeatlas.train.run as run
    from saeatlas.errors import ConfigError

    monkeypatch.setattr(run, "memory_bytes", lambda device: 8_000)  # weights 2,304, batch 4,608
    run.check_fits(6, 12, 32, "cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="held by each of the 2 processes on this machine"):
        run.check_fits(6, 12, 32, "cpu")
    monkeypatch.setattr(run, "memory_bytes", lambda device: 9_216)
    run.check_fits(6, 12, 32, "cpu")  # the batch is shared out, not copied


def test_a_sweep_of_held_out_rows_that_do_not_vary_is_refused_before_training(
    run_cli, tmp_path, forbid
):
    """A store whose last tenth of rows are all the same was swept: every member was
    trained, then the evaluation refused the rows ("do not vary ... Evaluate on other
    rows", which a sweep has no flag for)."""
    from saeatlas.sweep import members

    x = np.random.default_rng(0).normal(size=(320, 6)).astype("f4")
    x[-32:] = 1.0
    np.save(tmp_path / "a.npy", x)
    forbid(members, "train_family")
    cli, one_line = run_cli
    args = ["--acts", tmp_path / "a.npy", "--out", tmp_path / "sw", "--values", "1", "2"]
    r = cli("sweep", *args, "--d-sae", "12", "--tokens", "64", "--batch-size", "32", "-q")
    one_line(r, "held-out rows 288:320", "do not vary", "Raise --heldout-fraction")
    assert not (tmp_path / "sw").exists()


def test_a_member_that_fires_no_latent_is_not_the_knee():
    """A ReLU sweep whose strongest penalty silenced every latent (held-out L0 0) took
    log(1e-12) for that member's L0, which squeezed the others into the top tenth of
    the axis: the knee fell on the SAE that fires nothing, the sweep recommended it
    (and extended the range past it, training more of them). Sweeps recorded before
    still read."""
    from saeatlas.sweep.pareto import RULE, check_recorded, knee, pareto_front

    l0, fvu = [9.6, 4.0, 1.5, 0.0], [0.19, 0.35, 0.6, 1.0]
    assert knee(l0, fvu) == 1
    front = set(pareto_front(l0, fvu).tolist())
    on = [i in front for i in range(4)]
    for recommended in (1, 3):  # this rule's, and the one recorded before
        check_recorded([1.0, 3.0, 10.0, 100.0], l0, fvu, on, recommended, RULE)
    with pytest.raises(ValueError, match="`recommended` is point 2"):
        check_recorded([1.0, 3.0, 10.0, 100.0], l0, fvu, on, 2, RULE)


def test_a_file_where_a_seed_sae_goes_is_named_as_that_seed(run_cli, acts, tmp_path):
    """`train --out sae --seeds 3` beside a file `sae-seed1` was told "'sae-seed1' exists
    and is not a directory; choose another output", an output nobody gave (--seeds
    names its directories after --out)."""
    cli, one_line = run_cli
    (tmp_path / "sae-seed1").write_text("mine")
    r = cli("train", "--acts", acts, "--out", tmp_path / "sae", "--seeds", "3", *SMALL)
    one_line(r, "--seeds 3 also writes the SAE with seed 1 to", "choose another --out")
    assert (tmp_path / "sae-seed1").read_text() == "mine" and not (tmp_path / "sae").exists()
