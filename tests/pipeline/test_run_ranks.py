"""``torchrun -m saeatlas demo`` / ``run``: the whole pipeline on two gloo ranks makes the
run one process makes; rank 0 alone writes, ablates, reports and prints."""

import json
import os
import subprocess
import sys

import pandas as pd

from saeatlas.store.lock import output_lock

WAIT_S = 600


def _torchrun(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # PYTHONPATH passes through
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "saeatlas", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=WAIT_S)


def test_two_ranks_run_the_pipeline_one_process_runs(quick_demo, tmp_path):
    one, _ = quick_demo
    out = tmp_path / "two"
    result = _torchrun("demo", "--quick", "--out", str(out), "--quiet", "--timeout", "300")
    assert result.returncode == 0, result.stdout + result.stderr
    for stage in ("capture", "sweep", "train", "analyze", "ablation", "report"):
        assert result.stdout.count(f"{stage} ran") == 1, result.stdout  # rank 0 says so
    assert result.stdout.count("Report:") == 1, result.stdout
    # the sweep trained data-parallel and rank 0 evaluated it: the same recommendation
    two_sweep = json.loads((out / "sweep" / "sweep.json").read_text())
    one_sweep = json.loads((one.out / "sweep" / "sweep.json").read_text())
    assert [p["value"] for p in two_sweep["points"]] == [p["value"] for p in one_sweep["points"]]
    assert two_sweep["recommended"] == one_sweep["recommended"]
    two_units = pd.read_parquet(out / "atlas" / "units.parquet")
    one_units = pd.read_parquet(one.out / "atlas" / "units.parquet")
    assert two_units["module"].tolist() == one_units["module"].tolist()
    # the ranks shared the modules' ablations out and wrote what one process computes
    two_m = pd.read_parquet(out / "atlas" / "modules.parquet")
    one_m = pd.read_parquet(one.out / "atlas" / "modules.parquet")
    for col in ("ablation_p", "ablation_q", "ablation_draws"):
        assert two_m[col].tolist() == one_m[col].tolist(), col
    pd.testing.assert_series_equal(two_m.ablation_effect, one_m.ablation_effect, rtol=1e-5)
    assert (out / "atlas" / "report.html").is_file()
    state = json.loads((out / "run.json").read_text())["stages"]
    assert all(s["complete"] for s in state.values()), state
    assert not list(tmp_path.glob(".*.lock")), "a lock outlived the run"

    again = _torchrun("demo", "--quick", "--out", str(out), "--quiet", "--timeout", "300")
    assert again.returncode == 0, again.stdout + again.stderr
    for stage in ("capture", "sweep", "train", "analyze", "ablation", "report"):
        assert again.stdout.count(f"{stage} skipped") == 1, again.stdout


def test_a_run_directory_in_use_stops_every_rank_with_one_error(tmp_path):
    out = tmp_path / "busy"
    with output_lock(out):  # another run holds it
        result = _torchrun("demo", "--quick", "--out", str(out), "--quiet", "--timeout", "60")
    assert result.returncode != 0
    assert "is being written by process" in result.stderr + result.stdout
    assert "Traceback" not in result.stdout
    assert not out.exists() or not any(out.iterdir()), "the run wrote into a locked directory"
