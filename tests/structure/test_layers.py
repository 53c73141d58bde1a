"""Where modules live across layers, and flows between modules of consecutive layers."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from saeatlas.sae import SAEConfig, SparseAutoencoder
from saeatlas.store import LayerSpec
from saeatlas.structure.describe.layers import (
    FLOW_COLUMNS,
    layer_module_links,
    module_flows,
    module_layer_mass,
    module_layer_profile,
)
from saeatlas.structure.graph.codes import Codes
from saeatlas.structure.synthetic.config import PlantedConfig, module_spans
from saeatlas.structure.synthetic.planted import make_planted


def layer_specs(sizes) -> tuple[LayerSpec, ...]:
    stops = np.cumsum(sizes)
    return tuple(
        LayerSpec(f"layer{i}", int(b - s), int(b), (int(s),), "sample")
        for i, (s, b) in enumerate(zip(sizes, stops))
    )


def make_sae(W_dec, W_enc, layers) -> SparseAutoencoder:
    d_sae, d_in = W_dec.shape
    sae = SparseAutoencoder(SAEConfig(architecture="relu", d_in=d_in, d_sae=d_sae, layers=layers))
    with torch.no_grad():
        sae.W_dec.copy_(torch.as_tensor(W_dec, dtype=torch.float32))
        sae.W_enc.copy_(torch.as_tensor(W_enc, dtype=torch.float32))
    return sae


def test_layer_profile_by_hand():
    unit_module = np.array([0, 0, 1, 1, 1, -1, 0])
    unit_layer = np.array([0, 1, 1, 1, 2, 2, 2])
    profile = module_layer_profile(unit_module, unit_layer, 3)
    np.testing.assert_allclose(profile, [[1 / 3, 1 / 3, 1 / 3], [0, 2 / 3, 1 / 3]])
    assert layer_module_links(profile, 0.5) == [[], [1]]
    assert layer_module_links(profile, 0.3, ["a", "b", "c"]) == [["a", "b", "c"], ["b", "c"]]
    # A module without units spans nothing.
    assert module_layer_profile(unit_module, unit_layer, 3, n_modules=3)[2].sum() == 0
    with pytest.raises(ValueError, match="min_share"):
        layer_module_links(profile, 0.0)


@pytest.fixture(scope="module")
def planted():
    cfg = PlantedConfig(n_rows=4000, layer_sizes=(24, 24, 24, 24), n_modules=3, module_layers=2)
    return make_planted(cfg)


def test_links_report_the_planted_spans(planted):
    spans = [list(s) for s in module_spans(planted.config)]
    assert spans == [[0, 1], [1, 2], [2, 3]]
    profile = module_layer_profile(planted.unit_module, planted.unit_layer, 4)
    assert layer_module_links(profile) == spans
    names = [[planted.layer_names[l] for l in s] for s in spans]
    assert layer_module_links(profile, layer_names=planted.layer_names) == names


def test_decoder_mass_of_the_planted_dictionary_reports_the_planted_spans(planted):
    # The true dictionary as an SAE decoder, in the (very unequally scaled) unit coordinates:
    # standardising by the units' std must undo the layer scales.
    W = planted.scaled_directions
    layers = layer_specs(planted.config.layer_sizes)
    sae = make_sae(W, W.T, layers)
    mass = module_layer_mass(sae, planted.feature_module, layers, planted.X.std(axis=0))
    np.testing.assert_allclose(mass.sum(axis=1), 1.0)
    assert layer_module_links(mass) == [list(s) for s in module_spans(planted.config)]


def flow_toy(n_rows=2000, seed=0):
    """Layer 0 (units 0-3) holds modules A=0 (units 0, 1) and C=2 (units 2, 3); layer 1
    (units 4-7) holds B=1 (4, 5) and D=3 (6, 7). Feature i writes unit i; features 0-1 are
    A's, 2-3 C's, 4-5 B's, 6-7 D's. A and B always fire together; C and D at random.
    B's encoders also read A's layer-0 units with weight 0.5."""
    rng = np.random.default_rng(seed)
    layers = layer_specs((4, 4))
    unit_module = np.array([0, 0, 2, 2, 1, 1, 3, 3])
    unit_layer = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    feature_module = unit_module.copy()
    dense = np.zeros((n_rows, 8))
    on = rng.random(n_rows) < 0.3
    level = rng.exponential(size=n_rows)
    for f in (0, 1, 4, 5):
        dense[:, f] = on * level * rng.uniform(0.8, 1.2, n_rows)
    for f in (2, 3, 6, 7):
        dense[:, f] = (rng.random(n_rows) < 0.3) * rng.exponential(size=n_rows)
    W_dec = np.eye(8)
    W_enc = np.eye(8)
    W_enc[0, 4] = W_enc[1, 5] = 0.5
    matrix = sp.csr_matrix(dense, dtype=np.float32)
    codes = Codes(
        matrix=matrix,
        rows=np.arange(n_rows),
        samples=np.arange(n_rows),
        layers=layers,
        unit_mean=np.zeros(8),
        unit_std=np.ones(8),
        act_sum=np.asarray(matrix.sum(axis=0)).ravel(),
        act_sq_sum=np.asarray(matrix.power(2).sum(axis=0)).ravel(),
        cross=np.zeros((8, 8)),
    )
    sae = make_sae(W_dec, W_enc, layers)
    return codes, unit_module, unit_layer, sae, feature_module


def test_flows_find_the_coactivating_and_wired_pair():
    codes, unit_module, unit_layer, sae, feature_module = flow_toy()
    flows = module_flows(codes, unit_module, unit_layer, sae, feature_module)
    assert list(flows.columns) == list(FLOW_COLUMNS)
    # Modules in layer 0: A, C; in layer 1: B, D; so four pairs.
    pairs = set(zip(flows["source_module"], flows["target_module"]))
    assert pairs == {(0, 1), (0, 3), (2, 1), (2, 3)}
    assert set(flows["source_layer"]) == {"layer0"} and set(flows["target_layer"]) == {"layer1"}
    best = flows.loc[flows["coactivation"].idxmax()]
    assert (best["source_module"], best["target_module"]) == (0, 1)
    assert best["coactivation"] > 0.9
    assert flows["coactivation"].drop(best.name).abs().max() < 0.1
    # Through layer 0 the only gains between different features are G[0, 4] = G[1, 5] = 0.5:
    # mean over A x B pairs 1.0 / 4, over all 8 * 7 feature pairs 1.0 / 56, ratio 14.
    flow = flows.set_index(["source_module", "target_module"])["weight_flow"]
    assert flow[(0, 1)] == pytest.approx(14.0)
    assert flow[[(0, 3), (2, 1), (2, 3)]].tolist() == [0.0, 0.0, 0.0]


def test_coactivation_equals_dense_correlation_of_layer_activities():
    codes, unit_module, unit_layer, _, feature_module = flow_toy(n_rows=500, seed=1)
    rng = np.random.default_rng(2)
    W_dec = rng.normal(size=(8, 8))  # every feature writes both layers
    sae = make_sae(W_dec, W_dec.T, codes.layers)
    flows = module_flows(codes, unit_module, unit_layer, sae, feature_module)
    energy = np.stack([(W_dec[:, :4] ** 2).sum(1), (W_dec[:, 4:] ** 2).sum(1)], axis=1)
    share = energy / energy.sum(axis=1, keepdims=True)
    dense = codes.matrix.toarray().astype(np.float64)
    for _, r in flows.iterrows():
        a, b = r["source_module"], r["target_module"]
        act_a = dense[:, feature_module == a] @ share[feature_module == a, 0]
        act_b = dense[:, feature_module == b] @ share[feature_module == b, 1]
        assert r["coactivation"] == pytest.approx(np.corrcoef(act_a, act_b)[0, 1], abs=1e-9)


def test_flows_without_consecutive_modules_are_empty():
    codes, unit_module, unit_layer, sae, feature_module = flow_toy(n_rows=50)
    flows = module_flows(codes, unit_module, np.zeros_like(unit_layer), sae, feature_module)
    assert flows.empty and list(flows.columns) == list(FLOW_COLUMNS)
