"""Analysis in two CPU processes (gloo) gives the atlas one process gives; a rank
that fails stops both with one clear error, never a hang. The ranks count a graph's
pairs in blocks, and build the graph one process builds."""

import copy
import json
import os
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import torch.distributed as dist

from saeatlas import _coordinator
from saeatlas._coordinator import solo
from saeatlas.structure import Atlas, AtlasConfig, analyze
from saeatlas.structure.graph import communities
from saeatlas.structure.graph.codes import _batches_to_encode
from saeatlas.structure.graph.communities import cooccurrence_graph
from saeatlas.structure.graph.cooccurrence import _binarise, count_cooccurrence, latent_blocks
from saeatlas.structure.graph.edges import build_graph, densest_graph
from saeatlas.train import TrainConfig, train_sae
from spawned_ranks import join_gloo

# 1500 of the digits' 1797 rows: six evenly spaced batches of 256, the last one cut,
# three for each rank
CONFIG = dict(n_null=3, batch_size=256, max_rows=1500, n_examples=3)
WAIT_S = 90  # a worker still running after this is a hang


@pytest.fixture(scope="module")
def single(digits_store, tmp_path_factory):
    """Two SAEs trained on the digits store (the analysed one and a seed twin), the
    atlas one process makes of them, and the parts in which it counted its graphs."""
    root = tmp_path_factory.mktemp("analysis")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for seed in (0, 1):
            cfg = TrainConfig(d_sae=64, k=6, tokens=20_000, batch_size=256, seed=seed)
            train_sae(digits_store, cfg, root / f"sae{seed}", progress=False)
        with _recorded_parts() as parts:
            atlas = analyze(
                root / "sae0", digits_store, AtlasConfig(**CONFIG), seed_saes=[root / "sae1"]
            )
    finally:
        torch.set_num_threads(threads)
    return root, atlas, parts


@contextmanager
def _recorded_parts():
    """The ``part`` of every co-occurrence count of the analysis's graphs (all go
    through ``cooccurrence_graph``), in order."""
    real, parts = communities.count_cooccurrence, []

    def count(*args, part=(0, 1), **kwargs):
        parts.append(list(part))
        return real(*args, part=part, **kwargs)

    communities.count_cooccurrence = count
    try:
        yield parts
    finally:
        communities.count_cooccurrence = real


def _worker(rank, world, port, root, store, fail, settings, name):
    """One rank of ``analyze`` under an initialised group, with ``settings`` over
    :data:`CONFIG` (or ``settings[rank]``, given a list), writing the atlas to ``root/name-r{rank}``; ``fail`` = (rank, where)
    plants a failure there: "item" (an ensemble member after member 0) or "step" (a
    step that every rank runs on its own, between two meetings)."""
    join_gloo(rank, world, port)
    if fail and fail[0] == rank:
        _plant_failure(fail[1])
    try:
        with _recorded_parts() as parts:
            atlas = analyze(
                f"{root}/sae0",
                store,
                AtlasConfig(
                    **CONFIG, **(settings[rank] if isinstance(settings, list) else settings)
                ),
                seed_saes=[f"{root}/sae1"],
                timeout_s=30,
            )
        atlas.save(f"{root}/{name}-r{rank}", overwrite=True)
        result = {"ok": True, "parts": parts}
    except Exception as e:
        result = {"error": type(e).__name__, "message": str(e)}
    finally:
        dist.destroy_process_group()
    with open(f"{root}/r{rank}.json", "w") as f:
        json.dump(result, f)


def _plant_failure(where):
    analyze_mod = sys.modules["saeatlas.structure.analyze"]  # (the package exports a function
    ensemble_mod = sys.modules["saeatlas.structure.inference.ensemble"]  # of the same name)

    def fail(*args, **kwargs):
        raise ValueError("planted failure")

    if where == "item":  # the first member this rank computes after member 0
        real, calls = ensemble_mod.find_levels, []

        def find_levels(*args, **kwargs):
            calls.append(1)
            return real(*args, **kwargs) if len(calls) == 1 else fail()

        ensemble_mod.find_levels = find_levels
    else:
        analyze_mod.feature_map = fail


@pytest.fixture
def run_ranks(spawn_ranks, single, digits_store):
    def run(fail=None, settings=None, name="two"):
        """Run 2 ranks to their end; each rank's result."""
        root = single[0]
        args = (str(root), str(digits_store.path), fail, settings or {}, name)
        spawn_ranks(_worker, args, WAIT_S)
        results = []
        for r in range(2):
            path = root / f"r{r}.json"
            results.append(json.loads(path.read_text()) if path.exists() else {"died": True})
            path.unlink(missing_ok=True)
        return results

    return run


def _assert_same_atlas(two: Atlas, one: Atlas) -> None:
    for table in ("units", "modules"):
        a, b = getattr(two, table), getattr(one, table)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=1e-12, obj=table)
    assert two.n_modules == one.n_modules
    s2, s1 = two.summary, one.summary
    for n2, n1 in zip(s2["nulls"], s1["nulls"]):
        assert n2["null"] == n1["null"]
        np.testing.assert_allclose(n2["p"], n1["p"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(n2["z"], n1["z"], rtol=1e-9)
    assert s2["ensemble"]["levels"] == s1["ensemble"]["levels"]
    assert s2["control"]["n_modules"] == s1["control"]["n_modules"]


def test_two_ranks_give_the_atlas_one_process_gives(single, run_ranks):
    root, one, _ = single
    results = run_ranks()
    assert [r.get("ok") for r in results] == [True, True], results
    for r in range(2):
        _assert_same_atlas(Atlas.load(root / f"two-r{r}"), one)
    # small dictionaries: the members and null draws are shared out, each graph
    # counted whole by its rank
    assert all([0, 1] in results[r]["parts"] for r in range(2))


def test_large_dictionaries_count_every_graph_in_parts_and_give_the_same_atlas(single, run_ranks):
    """``count_in_parts_from`` at most d_sae: every graph of the analysis (members,
    null draws, the control's) is counted in parts by both ranks together."""
    root, one, one_parts = single
    results = run_ranks(settings={"count_in_parts_from": 1}, name="parts")
    assert [r.get("ok") for r in results] == [True, True], results
    for r in range(2):
        _assert_same_atlas(Atlas.load(root / f"parts-r{r}"), one)
        # no rank counted a whole graph: each counted its block of every graph one
        # process counts
        assert results[r]["parts"] == [[r, 2]] * len(one_parts)
    assert one_parts == [[0, 1]] * len(one_parts) and len(one_parts) > 10


@pytest.mark.parametrize(
    "where, settings",
    [("item", {}), ("step", {}), ("item", {"count_in_parts_from": 1})],
    ids=["item", "step", "item in parts"],
)
def test_a_rank_that_fails_stops_both_with_one_clear_error(run_ranks, where, settings):
    results = run_ranks(fail=(1, where), settings=settings)
    assert results[1] == {"error": "ValueError", "message": "planted failure"}
    assert results[0]["error"] == "DistributedError"
    assert results[0]["message"] == "Rank 1 of 2 failed, so rank 0 stopped too: planted failure"


def test_ranks_given_different_settings_stop_with_one_error_naming_them(run_ranks):
    """They once made one atlas of two analyses, each rank its share of each."""
    results = run_ranks(settings=[{}, {"seed": 1}], name="differ")
    for r in results:
        assert r["error"] == "ConfigError", results
        assert r["message"].startswith(
            "The ranks of this analysis were given different `seed` (ranks [1] differ"
        ), r


@pytest.fixture(scope="module")
def modular(tmp_path_factory):
    """A network whose units form modules (two tasks, pruned to 10%: the digits network
    has none to ablate), its store, two SAEs and the atlas one process makes of them."""
    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.demo.multitask import MULTITASK_LAYERS, multitask_data, multitask_model

    root = tmp_path_factory.mktemp("modular")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = multitask_model()
        x, labels = multitask_data(1)
        np.save(root / "x.npy", x)
        np.save(root / "y.npy", labels[:, 0])  # the digit
        store = capture_activations(
            model, x, list(MULTITASK_LAYERS), root / "store", CaptureConfig(), progress=False
        )
        for seed in (0, 1):
            cfg = TrainConfig(d_sae=64, k=6, tokens=20_000, batch_size=256, seed=seed)
            train_sae(store, cfg, root / f"sae{seed}", progress=False)
        one = analyze(root / "sae0", store, AtlasConfig(**CONFIG), seed_saes=[root / "sae1"])
    finally:
        torch.set_num_threads(threads)
    assert one.n_modules >= 2, one.summary["message"]
    return root, store, model, x, labels[:, 0], one


def test_torchrun_cli_writes_the_atlas_one_process_makes(modular):
    """... with the ablation shared out among the ranks (each loads the model and
    ablates its share of the modules): the figures one process computes."""
    from saeatlas.structure.causal.ablation import ablate_atlas

    root, store, model, x, y, one = modular
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # PYTHONPATH passes through
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "saeatlas", "analyze", "--sae", str(root / "sae0"), "--acts", str(store.path),
        "--out", str(root / "cli"), "--seed-sae", str(root / "sae1"), "--seeds", "2",
        "--n-null", "3", "--batch-size", "256", "--max-rows", "1500", "--n-examples", "3",
        "--model", "saeatlas.demo.multitask:multitask_model", "--inputs", str(root / "x.npy"),
        "--labels", str(root / "y.npy"), "--ablation-draws", "20",
        "--timeout", "60", "--quiet",
    ]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("Written to") == 1, result.stdout  # rank 0 writes and prints
    two = Atlas.load(root / "cli")
    ablated = [c for c in two.modules.columns if c.startswith("ablation_")]
    assert len(ablated) == 6 and not two.ablation.empty
    plain = Atlas.load(root / "cli")
    plain.modules = plain.modules.drop(columns=ablated)
    _assert_same_atlas(plain, one)
    one = copy.deepcopy(one)  # the fixture's atlas stays as it is
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ablate_atlas(one, model, x, store, labels=y, n_random=20)
    finally:
        torch.set_num_threads(threads)
    pd.testing.assert_frame_equal(two.modules[ablated], one.modules[ablated])
    pd.testing.assert_frame_equal(two.ablation, one.ablation)


def test_a_world_of_one_runs_the_same_steps_and_never_waits():
    coord = solo()
    assert coord.spread(5, lambda i: i * i) == [0, 1, 4, 9, 16]
    with pytest.raises(ZeroDivisionError):  # an item's own error, as raised
        coord.spread(3, lambda i: 1 / (i - 2))
    (total,) = coord.sum_arrays([np.ones(3, np.float32)])
    assert total.dtype == np.float64 and total.tolist() == [1.0, 1.0, 1.0]
    assert coord.concat([np.arange(3)])[0].tolist() == [0, 1, 2]
    assert coord.run(lambda: 7) == 7 and coord.share(4) == (0, 4)


def test_the_encoded_batches_are_evenly_spaced_runs_cut_to_max_rows():
    plan = _batches_to_encode(1797, 256, 1500)  # the tests' digits store
    assert [b for b, _ in plan] == [0, 1, 2, 4, 5, 6] and sum(n for _, n in plan) == 1500
    assert plan[-1] == (6, 1500 - 5 * 256)
    assert _batches_to_encode(1797, 256, None)[-1] == (7, 1797 - 7 * 256)
    assert sum(n for _, n in _batches_to_encode(1797, 256, 1700)) == 1700


# ---------------------------------------------------------------- pair counts in blocks


def _planted_fires():
    """[3000, 200] firings: 4 groups of 6 latents scattered over the dictionary (so
    they straddle the ranks' blocks) switch on together in 8% of the rows; every
    latent also fires on its own. 30 samples of 100 rows (for windows)."""
    rng = np.random.default_rng(5)
    n_rows, d = 3000, 200
    fires = rng.random((n_rows, d)) < rng.uniform(0.005, 0.05, d)
    for group in rng.permutation(d)[:24].reshape(4, 6):
        on = rng.random(n_rows) < 0.08
        fires[:, group] |= on[:, None] & (rng.random((n_rows, 6)) < 0.6)
    return sp.csr_matrix(fires.astype(np.float32)), np.repeat(np.arange(30), 100)


def _graphs(coord):
    """The graphs compared: ``{case: FeatureGraph}`` (``coord``: the ranks, or None),
    and the stored pairs of this process's part of the counts."""
    fires, samples = _planted_fires()
    part = (0, 1) if coord is None else (coord.world.rank, coord.world.size)
    co = count_cooccurrence(fires, part=part)
    co_torch = count_cooccurrence(fires, part=part, engine="torch")
    none = count_cooccurrence(np.eye(40, 8), part=part)  # no pair ever fires together
    graphs = {
        "build": build_graph(co, coord=coord),
        # more edges than are significant: the p cut is widened (a meeting each round)
        "densest": densest_graph(co, 400, coord=coord),
        "windows": cooccurrence_graph(fires, samples, AtlasConfig(window=4), 150, coord),
        "torch": build_graph(co_torch, engine="torch", coord=coord),
        "no pairs": build_graph(none, coord=coord),
    }
    return graphs, co


GRAPH_FIELDS = ("row", "col", "count", "p", "q", "weight")


def _graph_worker(rank, world, port, root):
    join_gloo(rank, world, port)
    try:
        graphs, co = _coordinator.run_ranks("analysis", "cpu", 30, _graphs)
        arrays = {f"{c}.{f}": getattr(g, f) for c, g in graphs.items() for f in GRAPH_FIELDS}
        arrays["stored_rows"] = np.flatnonzero(np.diff(co.counts.indptr))
        np.savez(f"{root}/graph-r{rank}.npz", n_pairs=co.n_pairs, **arrays)
    finally:
        dist.destroy_process_group()


def test_two_ranks_count_their_blocks_and_build_the_graph_one_process_builds(spawn_ranks, tmp_path):
    spawn_ranks(_graph_worker, (str(tmp_path),), WAIT_S)
    one, whole = _graphs(None)
    assert one["build"].n_edges > 50 and one["no pairs"].n_edges == 0
    assert one["densest"].n_edges == 400 > one["build"].n_edges
    bounds = latent_blocks(_binarise(_planted_fires()[0]), 2)
    stored = []
    for r in range(2):
        two = np.load(tmp_path / f"graph-r{r}.npz")
        for case, g in one.items():
            for f in GRAPH_FIELDS:  # exactly: the same pairs, tested alike
                np.testing.assert_array_equal(two[f"{case}.{f}"], getattr(g, f), f"{case}.{f}")
        # each rank held the pairs of its own block of latents only
        rows = two["stored_rows"]
        assert rows.min() >= bounds[r] and rows.max() < bounds[r + 1]
        stored.append(int(two["n_pairs"]))
    assert sum(stored) == whole.n_pairs and max(stored) < 0.6 * whole.n_pairs
