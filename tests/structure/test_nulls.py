"""Null models keep the marginals and break the structure; significance maths."""

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.stats import false_discovery_control, norm
from scipy.stats import t as student_t

from saeatlas.sae import SAEConfig, SparseAutoencoder
from saeatlas.store import ActivationStore
from saeatlas.structure import (
    AtlasConfig,
    PlantedConfig,
    make_planted,
    map_structure,
    save_planted,
)
from saeatlas.structure.inference.cohesion import module_weight
from saeatlas.structure.inference.nulls import dictionary_null_codes, permute_codes, rewire
from saeatlas.structure.inference.significance import NullTest, bh_adjust, verdict
from saeatlas.train import TrainConfig, train_sae


def cofiring_codes(n=4000, seed=0):
    """Latents 0-3 fire together (one block), 4-7 independently."""
    rng = np.random.default_rng(seed)
    on = rng.random(n) < 0.2
    block = np.repeat(on[:, None], 4, axis=1) & (rng.random((n, 4)) < 0.9)
    free = rng.random((n, 4)) < 0.15
    fires = np.concatenate([block, free], axis=1)
    vals = rng.uniform(0.5, 2.0, fires.shape) * fires
    return sp.csr_matrix(vals.astype(np.float32))


def phi(a, b):
    return np.corrcoef(a, b)[0, 1]


def test_permuted_codes_keep_each_feature_and_lose_cofiring():
    codes = cofiring_codes()
    null = permute_codes(codes, np.random.default_rng(1))
    assert null.shape == codes.shape
    for j in range(codes.shape[1]):
        a, b = codes[:, [j]].toarray().ravel(), null[:, [j]].toarray().ravel()
        assert np.array_equal(np.sort(a), np.sort(b))  # same values, same density
    dense, nd = codes.toarray() > 0, null.toarray() > 0
    assert phi(dense[:, 0], dense[:, 1]) > 0.7
    assert abs(phi(nd[:, 0], nd[:, 1])) < 0.08


def test_permuted_codes_place_each_column_on_uniform_distinct_rows():
    """Over many draws each column's values land on distinct rows, the first value on
    every row and the first two on every ordered pair of rows equally often: for sparse
    columns (drawn together, collisions redrawn), columns at and above the dense cut
    (drawn one by one), and columns moved together keep their shared rows."""
    from scipy.stats import chisquare

    n_rows = 16
    counts = [1, 2, 3, 4, 5, 12, 16, 0]  # the dense cut is at a quarter of the rows
    dense = np.zeros((n_rows, len(counts)), dtype=np.float32)
    for j, c in enumerate(counts):  # column j fires on its first c rows, values 1, 2, ...
        dense[:c, j] = np.arange(1, c + 1)
    codes = sp.csr_matrix(dense)
    rng = np.random.default_rng(0)
    first = np.zeros((len(counts), n_rows))
    pairs = np.zeros((len(counts), n_rows, n_rows))
    for _ in range(1500):
        out = permute_codes(codes, rng).toarray()
        for j, c in enumerate(counts):
            col = out[:, j]
            assert np.array_equal(np.sort(col[col > 0]), dense[:c, j])  # distinct rows
            if c:
                r1 = np.flatnonzero(col == 1)[0]
                first[j, r1] += 1
            if c >= 2:
                pairs[j, r1, np.flatnonzero(col == 2)[0]] += 1
    off = ~np.eye(n_rows, dtype=bool)
    for j, c in enumerate(counts):
        if c:
            assert chisquare(first[j]).pvalue > 1e-4, (c, first[j])
        if c >= 2:
            assert pairs[j][~off].sum() == 0
            assert chisquare(pairs[j][off]).pvalue > 1e-4, c

    together = np.zeros(len(counts), dtype=bool)
    together[[1, 2]] = True
    for _ in range(50):
        out = permute_codes(codes, rng, together).toarray()
        assert np.array_equal(out[:, 1] > 0, (out[:, 2] > 0) & (out[:, 2] < 3))


def test_rewiring_keeps_edge_ends_and_weights():
    rng = np.random.default_rng(0)
    upper = sp.random(60, 60, density=0.1, random_state=1, format="csr")
    A = sp.triu(upper, k=1)
    A = (A + A.T).tocsr()
    R = rewire(A, rng)
    assert (R != R.T).nnz == 0 and R.diagonal().sum() == 0
    # Every edge keeps its weight; only dropped self-loops lose any.
    assert R.sum() <= A.sum() + 1e-9
    assert R.sum() > 0.9 * A.sum()
    deg_a = np.diff(A.indptr)
    strength_r = np.asarray(R.sum(1)).ravel()
    assert strength_r.sum() == pytest.approx(R.sum())
    assert np.corrcoef(deg_a, np.diff(R.indptr))[0, 1] > 0.8
    assert (R != A).nnz > 0


def test_dictionary_null_keeps_encoder_artefacts_that_permutation_removes():
    # Latents 0 and 1 read the same direction (a split feature): any row with that
    # direction fires both, even when the true features are independent.
    d_in, d_sae = 8, 6
    sae = SparseAutoencoder(SAEConfig(architecture="relu", d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        W = torch.eye(d_in)[:d_sae].clone()
        W[1] = W[0]
        sae.W_dec.copy_(W)
        sae.W_enc.copy_(W.t())
        sae.b_enc.fill_(-0.1)
        sae.b_dec.zero_()
    rng = np.random.default_rng(0)
    x = (rng.random((3000, d_sae)) < 0.2) * rng.uniform(0.5, 2, (3000, d_sae))
    with torch.no_grad():
        acts = sae.encode(torch.tensor(x @ W.numpy(), dtype=torch.float32)).acts
    codes = sp.csr_matrix(acts.numpy())
    real = codes.toarray() > 0
    assert phi(real[:, 0], real[:, 1]) > 0.95
    perm = permute_codes(codes, np.random.default_rng(1)).toarray() > 0
    assert abs(phi(perm[:, 0], perm[:, 1])) < 0.1
    noise = np.full(d_in, 0.01, np.float32)
    null = dictionary_null_codes(sae, sae, codes, noise, rng).toarray() > 0
    assert phi(null[:, 0], null[:, 1]) > 0.9  # the artefact survives in this null
    assert abs(phi(null[:, 2], null[:, 3])) < 0.1  # and true features stay independent


def _tied_relu_sae(W: torch.Tensor) -> SparseAutoencoder:
    sae = SparseAutoencoder(SAEConfig(architecture="relu", d_in=W.shape[1], d_sae=W.shape[0]))
    with torch.no_grad():
        sae.W_dec.copy_(W)
        sae.W_enc.copy_(W.t())
        sae.b_enc.fill_(-0.1)
        sae.b_dec.zero_()
    return sae


def test_a_seed_sourced_dictionary_null_carries_the_mixing_of_an_unlearnt_feature():
    # The data has an independent feature u = (e2 + e3) / sqrt(2) that the analysed SAE
    # did not learn: it reads e2 and e3, so both latents fire whenever u does. Another
    # SAE (another seed) learnt u itself. Sourced from its own dictionary the null
    # misses that co-firing; sourced from the other SAE's it keeps it.
    d_in = 6
    eye = torch.eye(d_in)
    u = (eye[2] + eye[3]) / 2**0.5
    sae = _tied_relu_sae(eye[:5].clone())  # latents e0 .. e4
    other = _tied_relu_sae(torch.stack([eye[0], eye[1], u, eye[4]]))
    rng = np.random.default_rng(0)
    true = (rng.random((4000, 4)) < 0.2) * rng.uniform(0.5, 2, (4000, 4))
    x = torch.tensor(true @ other.W_dec.detach().numpy(), dtype=torch.float32)
    with torch.no_grad():
        codes = sp.csr_matrix(sae.encode(x).acts.numpy())
        other_codes = sp.csr_matrix(other.encode(x).acts.numpy())
    real = codes.toarray() > 0
    assert phi(real[:, 2], real[:, 3]) > 0.9
    noise = np.full(d_in, 0.01, np.float32)
    self_null = dictionary_null_codes(sae, sae, codes, noise, rng).toarray() > 0
    assert abs(phi(self_null[:, 2], self_null[:, 3])) < 0.1
    seed_null = dictionary_null_codes(sae, other, other_codes, noise, rng).toarray() > 0
    assert seed_null.shape == real.shape
    assert phi(seed_null[:, 2], seed_null[:, 3]) > 0.9
    assert abs(phi(seed_null[:, 0], seed_null[:, 1])) < 0.1


def test_the_dictionary_null_leaves_out_latents_silent_on_the_real_rows():
    """Synthetic rows combine features that never fire together in the data and can wake
    latents the SAE never uses, which then fire on the same few rows: a clique of dead
    latents (phi 0.7-0.9) that outweighed real modules in some draws, a clique the real
    graph can never have. Here features 0 and 1 never fire together; latents 3 and 4
    read both and fire only where both do: silent on the real rows, a perfect pair in
    every draw of independent features."""
    from saeatlas.structure.graph.codes import strong_firing
    from saeatlas.structure.graph.communities import cooccurrence_graph
    from saeatlas.structure.inference.nulls import NULL_MODELS, DictionarySource, NullInputs

    rng = np.random.default_rng(0)
    n, d_in = 4000, 3
    eye = torch.eye(d_in)
    both = (eye[0] + eye[1]) / 2**0.5
    sae = _tied_relu_sae(torch.stack([eye[0], eye[1], eye[2], both, both]))
    with torch.no_grad():
        sae.b_enc[3:] = -1.5  # one feature reads at most 2 / sqrt(2) on them
    which = rng.integers(0, 3, n)  # feature 0, feature 1 or neither: never both
    true = np.zeros((n, d_in))
    true[which == 0, 0] = rng.uniform(0.5, 2, (which == 0).sum())
    true[which == 1, 1] = rng.uniform(0.5, 2, (which == 1).sum())
    true[:, 2] = (which == 0) * (rng.random(n) < 0.8) * rng.uniform(0.5, 2, n)  # with 0
    with torch.no_grad():
        codes = sp.csr_matrix(sae.encode(torch.tensor(true, dtype=torch.float32)).acts.numpy())
    cfg = AtlasConfig()
    fires, samples = strong_firing(codes, cfg.min_activation), np.arange(n)
    counts = np.bincount(fires.indices, minlength=5)
    assert counts[3] == counts[4] == 0 and (counts[:3] > 500).all()
    real = cooccurrence_graph(fires, samples, cfg).adjacency
    assert real.nnz == 2 and real[0, 2] > 0  # the one real edge
    source = DictionarySource(
        sae, codes, np.full(d_in, 0.01, np.float32), np.zeros(5, bool), "self"
    )
    inputs = NullInputs(
        fires=fires,
        samples=samples,
        rows=np.arange(n),
        real=real,
        n_edges=1,
        sae=sae,
        excluded=np.zeros(5, bool),
        silent=counts < 5,
        cfg=cfg,
        source=source,
    )
    draw = NULL_MODELS["dictionary"].draw
    null = draw(inputs, np.random.default_rng(1), None)
    assert null[3].nnz == null[4].nnz == 0  # the silent latents are in no null edge
    woken = draw(replace(inputs, silent=np.zeros(5, bool)), np.random.default_rng(1), None)
    assert woken[3, 4] > 0.9  # kept, they would make the null's one edge a perfect pair


def test_bh_adjust_matches_scipy():
    p = np.random.default_rng(0).uniform(0, 0.2, 50)
    np.testing.assert_allclose(bh_adjust(p), false_discovery_control(p), rtol=1e-12)
    assert bh_adjust(np.array([0.01, 0.04, 0.03])).tolist() == pytest.approx([0.03, 0.04, 0.04])


def test_null_test_z_and_verdict():
    null = np.array([0.10, 0.12, 0.11, 0.09, 0.13])
    fakes = np.tile([[0.01], [0.02], [0.01], [0.0], [0.01]], 2)  # [draws, modules]
    t = NullTest("x", 0.30, null, np.array([0.2, 0.005]), fakes)
    assert t.z == pytest.approx((0.30 - null.mean()) / null.std(ddof=1))
    assert t.p_empirical == pytest.approx(1 / 6)
    # the real figure as one more draw: Student's t with n - 1 = 4 degrees of freedom
    assert t.p == pytest.approx(student_t.sf(t.z / np.sqrt(1 + 1 / 5), 4))
    assert 1e-5 < t.p < 1e-3 and t.p > norm.sf(t.z)  # more cautious than the normal tail
    # with 5 draws a z of 3 is not the 0.001 the normal tail claims
    b = np.sqrt(2 - 1.2**2)
    three = NullTest("z3", 3.0, np.array([-1.2, -b, 0.0, b, 1.2]), np.zeros(0), np.zeros((5, 0)))
    assert three.z == pytest.approx(3.0) and norm.sf(3.0) < 0.002
    assert 0.02 < three.p < 0.03
    weak = NullTest("y", 0.115, null, np.array([0.2, 0.005]), fakes)
    ok, modules, _ = verdict([t], 0.05)
    assert ok and modules.tolist()[0] is True
    ok, modules, _ = verdict([t, weak], 0.05)
    assert not ok and not modules.any()  # one null that is not beaten sinks the partition


def test_a_null_whose_draws_are_all_equal_has_no_z_and_a_rank_p():
    """A floor on the spread turned a modularity of 0.45 against draws all 0 into z 449,293
    and p 1e-17 (the demo's cleaned correlations: z 167,179)."""
    from saeatlas.structure.inference.significance import strictness

    flat = NullTest("flat", 0.45, np.zeros(4), np.array([0.7, 0.0]), np.zeros((4, 2)))
    assert np.isnan(flat.z) and flat.p == flat.p_empirical == pytest.approx(1 / 5)
    assert np.isnan(flat.module_z()).all()
    assert flat.module_p().tolist() == pytest.approx([1 / 5, 1.0])  # 0.0 ties the draws
    d = flat.as_dict()
    assert d["z"] is None and d["p"] == pytest.approx(0.2) and d["null_std"] == 0.0
    assert not verdict([flat], 0.05)[0]  # 4 draws cannot show p < 0.05
    many = NullTest("many", 0.45, np.full(20, 0.1), np.array([0.7, 0.8]), np.full((20, 2), 0.3))
    ok, modules, p = verdict([many], 0.05)  # both modules beat all 20 draws
    assert ok and modules.all() and p.tolist() == pytest.approx([1 / 21] * 2)
    # the modularity's own sampling error (over the ensemble) is the floor of the spread
    floored = replace(flat, q_se=0.05)
    assert floored.z == pytest.approx(0.45 / 0.05) and floored.p < 0.01  # t, 3 dof
    assert floored.as_dict()["modularity_se"] == 0.05
    assert replace(many, q_se=0.05).z == pytest.approx((0.45 - 0.1) / 0.05)
    # draws equal up to rounding count as equal; a real spread, however small, does not
    assert np.isnan(replace(flat, null_q=np.array([0.1, 0.1 + 1e-12, 0.1, 0.1])).z)
    assert np.isfinite(replace(flat, null_q=np.array([0.1, 0.1001, 0.1, 0.1])).z)
    # the strictest of two nulls is the one with the larger p, its z whatever it is
    assert (
        max([flat.as_dict(), {"p": 0.01, "z": 4.0}], key=lambda n: strictness(n["p"], n["z"]))["z"]
        is None
    )


def test_a_null_fakes_no_module_larger_than_those_tested():
    """On a rewired null graph the finder returned one community of every feature, whose
    cohesion (half the mean degree) beat every real module of below-average degree: of
    eight planted, well separated modules only 3-6 were significant."""
    from saeatlas.structure.inference.cohesion import module_cohesion
    from saeatlas.structure.inference.significance import strongest_fakes

    rng = np.random.default_rng(1)
    a = np.triu(rng.uniform(0.5, 1, (30, 30)), 1)
    A = sp.csr_matrix(a + a.T)
    everything = np.zeros(30, int)
    assert module_cohesion(A, everything)[0] == pytest.approx(a.sum() / 30)
    assert strongest_fakes(A, everything, [12]).tolist() == [0.0]
    assert strongest_fakes(A, everything, [30, 12])[0] == pytest.approx(a.sum() / 30)
    # communities of 10, 10 and 10: all within 12, the most cohesive one counts
    three = np.repeat([0, 1, 2], 10)
    fake = strongest_fakes(A, three, [12, 10])
    assert fake[1] == pytest.approx(module_cohesion(A, three).max())
    # 20 and 10: only the 10 is within 12
    two = np.repeat([0, 1], [20, 10])
    assert strongest_fakes(A, two, [12, 10])[1] == pytest.approx(module_cohesion(A, two)[1])


def test_a_small_null_clique_counts_as_a_group_of_the_modules_size():
    """Some dictionary-null draws made a clique of three to six latents (edge
    weights 0.7-0.9) whose cohesion at its own size outweighed modules of twenty latents:
    the modules' verdict changed with the seed. Against a module of m members a smaller
    community counts as a group of m holding its edges; against a module no larger than
    it, at its own cohesion."""
    from saeatlas.structure.inference.cohesion import module_weight
    from saeatlas.structure.inference.significance import strongest_fakes

    rng = np.random.default_rng(2)
    n = 40
    a = np.triu(rng.uniform(0.0, 0.04, (n, n)), 1)
    a[:3, :3] = np.triu(np.full((3, 3), 0.8), 1)  # a tight clique of three
    A = sp.csr_matrix(a + a.T)
    labels = np.repeat([0, 1, 2], [3, 17, 20])  # the clique, and two loose communities
    w = module_weight(A, labels)
    sizes = np.array([3, 10, 17, 20, 25])
    fakes = strongest_fakes(A, labels, sizes)
    # against three members the clique counts whole; it beats every loose community
    assert fakes[0] == pytest.approx(w[0] / 3) and fakes[0] > max(w[1] / 17, w[2] / 20)
    # against ten, the clique over ten members or a community of 17 or 20 at its own size
    assert fakes[1] == pytest.approx(max(w[0] / 10, w[1] / 17, w[2] / 20))
    # against 17: the community of 20 is not larger than the largest module (25) tested
    assert fakes[2] == pytest.approx(max(w[0] / 17, w[1] / 17, w[2] / 20))
    assert fakes[4] == pytest.approx(max(w[0] / 25, w[1] / 25, w[2] / 25))
    # the bound never exceeds the old one (each community at its own cohesion)
    assert (fakes <= max(w[0] / 3, w[1] / 17, w[2] / 20) + 1e-12).all()
    # a largest module of 12 leaves out the communities of 17 and 20
    assert strongest_fakes(A, labels, [3, 12]).tolist() == pytest.approx([w[0] / 3, w[0] / 12])
    # against the brute force: every community within the largest size, as a group of m
    for m in sizes:
        brute = max(w[k] / max(c, m) for k, c in enumerate([3, 17, 20]) if c <= sizes.max())
        assert fakes[list(sizes).index(m)] == pytest.approx(brute)


def test_module_weight_sums_each_modules_internal_edges():
    A = sp.csr_matrix(
        np.array([[0, 2, 1, 0], [2, 0, 0, 0], [1, 0, 0, 3], [0, 0, 3, 0]], dtype=float)
    )
    assert module_weight(A, np.array([0, 0, 1, 1])).tolist() == [2.0, 3.0]
    assert module_weight(A, np.array([0, 0, -1, -1])).tolist() == [2.0]


def test_null_z_scores_are_near_zero_when_the_data_are_null():
    """Codes that are themselves a draw of the permutation null score z ~ N(0, 1)."""
    from saeatlas.structure.graph.cooccurrence import count_cooccurrence
    from saeatlas.structure.graph.edges import build_graph
    from saeatlas.structure.graph.finders import LeidenModules
    from saeatlas.structure.inference.significance import null_test

    def graph(m):
        return build_graph(count_cooccurrence(m), alpha=0.3, min_count=1).adjacency

    def fit(g):
        f = LeidenModules(random_state=0).fit(g)
        return f.modularity_, f.labels_

    zs = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        dens = rng.uniform(0.02, 0.2, 60)
        codes = sp.csr_matrix((rng.random((3000, 60)) < dens).astype(np.float32))
        labels = fit(graph(codes))[1]
        t = null_test(
            "permutation",
            graph(codes),
            labels,
            fit,
            lambda i, _, s=seed, c=codes: graph(permute_codes(c, np.random.default_rng([s, i]))),
            12,
        )
        zs.append(t.z)
        if np.isnan(t.z):  # every draw the same (no edges, modularity 0): no z
            assert t.p == t.p_empirical == 1.0
    zs = np.array(zs)
    zs = zs[np.isfinite(zs)]
    assert len(zs) >= 5 and np.abs(zs).mean() < 2.0 and (np.abs(zs) < 4).all(), zs


def test_the_dictionary_null_trains_its_seed_source_once_beside_the_sae(tmp_path):
    data = make_planted(PlantedConfig.preset("easy", seed=0, n_rows=3000))
    store = ActivationStore.open(save_planted(data, tmp_path / "acts"))
    train = TrainConfig(d_sae=64, k=8, tokens=30_000, batch_size=500, seed=3)
    train_sae(store, train, tmp_path / "sae", progress=False)
    cfg = AtlasConfig(nulls=("dictionary",), n_null=2, null_rows=3000, n_examples=0)
    atlas = map_structure(tmp_path / "sae", store, cfg)
    seed_dir = tmp_path / "sae-seed1"
    assert atlas.summary["dictionary_null_source"] == str(seed_dir)
    assert SparseAutoencoder.load(seed_dir).cfg.metadata["train_config"]["seed"] == 4
    weights = seed_dir / "sae_weights.safetensors"
    made = weights.stat().st_mtime_ns
    map_structure(tmp_path / "sae", store, cfg)
    assert weights.stat().st_mtime_ns == made  # reused, not trained again
    own = map_structure(tmp_path / "sae", store, replace(cfg, null_dictionary="self"))
    assert own.summary["dictionary_null_source"] == "self"
    # an SAE that does not record how it was trained falls back to its own dictionary
    bare = SparseAutoencoder.load(tmp_path / "sae")
    bare.cfg.metadata.clear()
    fallback = map_structure(bare, store, cfg)
    assert fallback.summary["dictionary_null_source"].startswith("self (")
    assert "no training settings" in fallback.summary["dictionary_null_source"]


def test_a_modules_own_sampling_error_is_the_floor_of_its_spread():
    """Ten dictionary-null draws all near 0.03 put the digits demo's modules of cohesion
    0.6 at z 154-180 (p 5e-17); the modules' own spread over the ensemble is larger."""
    null = np.array([0.030, 0.031, 0.029, 0.030, 0.032, 0.028])
    t = NullTest("d", 0.4, np.full(6, 0.1), np.array([0.6, 0.05]), np.tile(null[:, None], 2))
    assert t.module_z()[0] == pytest.approx((0.6 - null.mean()) / null.std(ddof=1))
    floored = replace(t, module_se=np.array([0.06, np.nan]))  # module 1: not known
    z = floored.module_z()
    assert z[0] == pytest.approx((0.6 - null.mean()) / 0.06)
    assert z[1] == pytest.approx(t.module_z()[1])  # no floor known: the draws' spread
    assert floored.module_p()[0] > t.module_p()[0]
    # a floor smaller than the draws' own spread changes nothing
    assert replace(t, module_se=np.array([1e-4, 1e-4])).module_z() == pytest.approx(t.module_z())


def test_cohesion_of_a_module_as_a_member_finds_it():
    from saeatlas.structure.inference.cohesion import (
        community_sizes,
        community_weights,
        module_cohesion,
        reappearing_cohesion,
        relative_spread,
    )

    rng = np.random.default_rng(0)
    a = np.triu(rng.uniform(0, 1, (12, 12)) * (rng.uniform(size=(12, 12)) < 0.5), 1)
    A = sp.csr_matrix(a + a.T)
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 3, 3, -1, -1, 4])
    W = community_weights(A, labels)
    dense = np.zeros((5, 5))
    for i, j in zip(*np.nonzero(a + a.T)):
        if labels[i] >= 0 and labels[j] >= 0:
            dense[labels[i], labels[j]] += (a + a.T)[i, j]
    np.testing.assert_allclose(W.toarray(), dense)
    np.testing.assert_allclose(module_weight(A, labels), np.diag(dense) / 2)
    # the member's communities 0 and 1 together are module 0; 2 is module 1; 3 and 4
    # match nothing (Jaccard under 0.5 with every module)
    modules = np.array([0, 0, 0, 0, 1, 1, 1, -1, -1, 2, 2, 2])
    got = reappearing_cohesion(W, community_sizes(labels), labels, modules)
    union = np.where(np.isin(labels, [0, 1]), 0, np.where(labels == 2, 1, -1))
    np.testing.assert_allclose(got[:2], module_cohesion(A, union))
    assert np.isnan(got[2])  # module 2 (units 9-11) does not reappear: no figure
    cv = relative_spread(np.array([[1.0, np.nan, 2.0], [1.2, np.nan, np.nan], [0.8, 3.0, 0.0]]))
    assert cv[0] == pytest.approx(np.std([1.0, 1.2, 0.8], ddof=1) / 1.0)
    assert np.isnan(cv[1])  # one member measured it
    assert cv[2] == pytest.approx(np.std([2.0, 0.0], ddof=1) / 1.0)
