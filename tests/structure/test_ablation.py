"""Ablating a module hurts what it computes, more than random units; per-class damage."""

import numpy as np
import pytest
import torch
from torch import nn

from saeatlas.errors import AtlasError, ConfigError
from saeatlas.store import LayerSpec
from saeatlas.structure.causal.ablation import ablate_modules


class TwoPathways(nn.Module):
    """Units 0-1 of ``act`` carry class 0's evidence, units 2-3 class 1's; 4-39 are unused."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 40)
        self.act = nn.ReLU()
        self.head = nn.Linear(40, 2)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.zero_()
            self.fc.weight[0:2, 0] = 3.0  # input 0 -> units 0, 1
            self.fc.weight[2:4, 1] = 3.0  # input 1 -> units 2, 3
            self.fc.weight[4:] = torch.randn(36, 2)  # unused units still vary
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[0, 0:2] = 1.0
            self.head.weight[1, 2:4] = 1.0

    def forward(self, x):
        return self.head(self.act(self.fc(x)))


@pytest.fixture
def task():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (400,), generator=g)
    x = torch.rand(400, 2, generator=g) * 0.2
    x[torch.arange(400), y] += 1.0  # class c lights up input c
    return TwoPathways(), x, y.numpy(), (LayerSpec("act", 0, 40, (40,), "sample"),)


def test_modules_hurt_their_own_class_more_than_random_units(task):
    model, x, y, layers = task
    unit_module = np.array([0, 0, 1, 1, 2, 2, 2, 2] + [-1] * 32)
    res = ablate_modules(
        model, x, layers, unit_module, labels=y, mode="zero", n_random=100, random_state=0
    )
    assert res.classes.tolist() == [0, 1]
    # Modules 0 and 1 carry the answer: ablating them costs loss, far beyond random pairs.
    assert res.effect[0] > 0.3 and res.effect[1] > 0.3
    assert res.p[0] <= 0.05 and res.p[1] <= 0.05 and res.z[0] > 2
    # Module 2's units are unused: no effect, not significant.
    assert abs(res.effect[2]) < 1e-6 and res.p[2] > 0.5
    # Each module hurts its own class and not the other.
    assert res.effect_by_class[0, 0] > 0.6 and res.effect_by_class[0, 1] <= 1e-6
    assert res.effect_by_class[1, 1] > 0.6 and res.effect_by_class[1, 0] <= 1e-6
    spec = res.specialisation()
    assert spec[0].argmax() == 0 and spec[1].argmax() == 1
    np.testing.assert_allclose(spec[:2].sum(axis=1), 1.0)
    # Hooks are gone afterwards: the model computes as before.
    torch.testing.assert_close(model(x), TwoPathways.forward(model, x))
    assert not model.act._forward_hooks


def _bh(p):
    """Benjamini-Hochberg q-values, written out: q_(i) = min over j >= i of p_(j) m / j."""
    order, m = np.argsort(p), len(p)
    q = np.empty(m)
    for rank, i in enumerate(order, start=1):
        q[i] = min(1.0, min(p[order[j - 1]] * m / j for j in range(rank, m + 1)))
    return q


def test_p_values_are_adjusted_over_the_modules_and_the_draws_grow_with_them(task, caplog):
    """Eight modules, two of them causal: by default up to 160 random sets each (20 per
    module), so that the two reach q <= 0.05; with 50 the smallest p, 1/51, is q 0.08
    among eight tests, and the ablation says so."""
    model, x, y, layers = task
    unit_module = np.array([0, 0, 1, 1] + [m for m in range(2, 8) for _ in range(2)] + [-1] * 24)
    res = ablate_modules(model, x, layers, unit_module, labels=y, mode="zero", random_state=0)
    assert res.n_random == 160
    np.testing.assert_allclose(res.q, _bh(res.p))
    assert (res.q[:2] <= 0.05).all() and (res.q[2:] > 0.05).all()
    # the causal modules draw every set; the others stop once 10 sets did as much damage
    # (their units are unused: every set does), with p = 10 / 10 (Besag & Clifford 1991)
    assert res.n_drawn.tolist() == [160, 160] + [10] * 6
    assert res.p[2:].tolist() == [1.0] * 6
    as_bad = res.p[:2] * 161 - 1  # p = (1 + sets as bad) / (1 + 160)
    np.testing.assert_allclose(as_bad, np.round(as_bad), atol=1e-9)
    assert (as_bad < 10).all()
    with caplog.at_level("WARNING"):
        few = ablate_modules(model, x, layers, unit_module, labels=y, mode="zero", n_random=50)
    assert few.n_random == 50 and (few.q > 0.05).all() and (few.p[:2] < 0.05).all()
    assert "draw at least 160" in caplog.text


def test_a_modules_random_sets_do_not_depend_on_the_modules_before_it(task):
    """Module 1's random sets come from its own stream: whether module 0's draws stopped
    after 10 sets (unused units) or ran to the end (causal units), module 1's effect
    against chance is the same."""
    model, x, y, layers = task
    causal_first = np.array([0, 0, 1, 1] + [-1] * 36)
    unused_first = np.array([-1, -1, 1, 1, 0, 0] + [-1] * 34)
    a, b = (
        ablate_modules(model, x, layers, u, labels=y, mode="zero", n_random=40)
        for u in (causal_first, unused_first)
    )
    assert a.n_drawn[0] == 40 and b.n_drawn[0] == 10
    assert a.p[1] == b.p[1] and a.random_mean[1] == b.random_mean[1]


def test_mean_ablation_uses_the_given_means(task):
    model, x, y, layers = task
    with torch.no_grad():
        h = model.act(model.fc(x)).numpy()
    unit_module = np.array([0, 0] + [-1] * 38)
    res = ablate_modules(model, x, layers, unit_module, labels=y, unit_mean=h.mean(0), n_random=5)
    # Units 0-1 at their means no longer separate the classes: loss rises, though less
    # than when they are zeroed (the mean still votes for class 0 a little).
    zero = ablate_modules(model, x, layers, unit_module, labels=y, mode="zero", n_random=5)
    assert 0.01 < res.effect[0] < zero.effect[0]
    with pytest.raises(ConfigError, match="unit_mean"):
        ablate_modules(model, x, layers, unit_module, labels=y, mode="mean")
    with pytest.raises(ConfigError, match="mode"):
        ablate_modules(model, x, layers, unit_module, labels=y, mode="noise")
    with pytest.raises(ConfigError, match="units"):
        ablate_modules(model, x, layers, unit_module[:5], labels=y, mode="zero")


def _atlas_of(unit_module, layer="act"):
    import pandas as pd

    from saeatlas.structure import Atlas

    n_modules = int(unit_module.max()) + 1
    return Atlas(
        units=pd.DataFrame({"unit": np.arange(len(unit_module)), "module": unit_module}),
        features=pd.DataFrame({"feature": [0], "module": [-1]}),
        modules=pd.DataFrame({"module": np.arange(n_modules)}),
        summary={"layers": [layer], "n_modules": n_modules},
    )


def test_ablate_atlas_writes_effects_the_label_table_and_a_summary(task, tmp_path):
    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.structure import Atlas
    from saeatlas.structure.causal.ablation import ablate_atlas

    model, x, y, _ = task
    store = capture_activations(
        model, x.numpy(), ["act"], tmp_path / "store", CaptureConfig(), progress=False
    )
    unit_module = np.array([0, 0, 1, 1, 2, 2, 2, 2] + [-1] * 32)
    atlas = _atlas_of(unit_module)
    res = ablate_atlas(atlas, model, x, store, labels=y, mode="zero", n_random=50)
    m = atlas.modules
    assert m["ablation_effect"].tolist() == pytest.approx(res.effect.tolist())
    assert m.loc[0, "ablation_p"] <= 0.05 and m.loc[2, "ablation_p"] > 0.5
    np.testing.assert_allclose(m["ablation_q"], _bh(res.p))
    assert atlas.summary["ablation"]["n_modules_above_random"] == int((res.q <= 0.05).sum())
    assert abs(m.loc[2, "ablation_effect"]) < 1e-6
    tab = atlas.ablation
    assert len(tab) == 3 * 2 and set(tab["label"]) == {"0", "1"}
    own = tab.set_index(["module", "label"])["specialisation"]
    assert own[(0, "0")] > 0.9 and own[(1, "1")] > 0.9
    assert atlas.summary["ablation"]["classes"] == ["0", "1"]
    assert atlas.summary["ablation"]["mode"] == "zero"
    back = Atlas.load(atlas.save(tmp_path / "atlas"))
    assert back.ablation["effect"].to_numpy() == pytest.approx(tab["effect"].to_numpy())


def test_ablate_atlas_names_a_store_without_the_atlas_layers(task, tmp_path):
    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.structure.causal.ablation import ablate_atlas

    model, x, y, _ = task
    store = capture_activations(
        model, x.numpy(), ["act"], tmp_path / "store", CaptureConfig(), progress=False
    )
    with pytest.raises(AtlasError, match="fc2"):
        ablate_atlas(_atlas_of(np.zeros(40, int), layer="fc2"), model, x, store, labels=y)
    with pytest.raises(AtlasError, match="30 units"):
        ablate_atlas(_atlas_of(np.zeros(30, int)), model, x, store, labels=y)


def test_single_unit_lesions_label_each_unit_by_the_class_it_serves(task):
    from saeatlas.structure.causal.lesion import unit_lesions

    model, x, y, layers = task
    res = unit_lesions(model, x, layers, labels=y, mode="zero")
    assert res.groups.tolist() == [0, 1]
    assert res.labels[:4].tolist() == [0, 0, 1, 1]
    assert (res.labels[4:] == -1).all()  # unused units have no role
    assert res.scaled.max() == pytest.approx(1.0)


def test_a_loss_with_one_column_per_task_splits_effects_by_task(task):
    """A two-term loss (one per output) is split by term, not by label; the module
    that feeds output 0 hurts only term 0."""
    from saeatlas.structure.causal.lesion import unit_lesions

    model, x, y, layers = task

    with torch.no_grad():
        clean = model(x)

    def per_output(out, batch):  # each output's squared change; the labels are row numbers
        return (out - clean[torch.as_tensor(batch.labels)]) ** 2

    y = np.arange(len(x))

    unit_module = np.array([0, 0, 1, 1] + [-1] * 36)
    res = ablate_modules(
        model, x, layers, unit_module, labels=y, mode="zero", loss_fn=per_output,
        loss_names=["first", "second"], n_random=20,
    )  # fmt: skip
    assert res.classes.tolist() == ["first", "second"]
    assert res.effect_by_class[0, 1] == pytest.approx(0, abs=1e-9)
    assert res.effect_by_class[0, 0] > 0.5 and res.effect_by_class[1, 1] > 0.5
    assert res.effect[0] == pytest.approx(res.effect_by_class[0].sum())
    lesions = unit_lesions(
        model, x, layers, labels=y, mode="zero", loss_fn=per_output, loss_names=["a", "b"]
    )
    assert lesions.labels[:4].tolist() == [0, 0, 1, 1]
    with pytest.raises(ConfigError, match="2 terms"):
        ablate_modules(
            model, x, layers, unit_module, labels=y, mode="zero", loss_fn=per_output,
            loss_names=["only"], n_random=2,
        )  # fmt: skip


def test_the_two_task_network_learns_both_tasks_and_lesions_split_its_units():
    from saeatlas.demo.multitask import (
        MULTITASK_LAYERS,
        TASKS,
        multitask_data,
        per_task_loss,
        train_multitask,
    )
    from saeatlas.structure.causal.lesion import unit_lesions

    trained = train_multitask(seed=0)
    assert trained.accuracy["digits"] > 0.85 and trained.accuracy["xor"] > 0.7
    x, y = multitask_data(0, repeats=1)
    widths = [trained.model.fc1.out_features, trained.model.fc2.out_features]
    widths.append(trained.model.fc3.out_features)
    starts = np.cumsum([0] + widths)
    layers = [
        LayerSpec(name, int(a), int(b), (b - a,), "sample")
        for name, a, b in zip(MULTITASK_LAYERS, starts[:-1], starts[1:], strict=True)
    ]
    lesions = unit_lesions(
        trained.model, x, layers, labels=y, mode="zero", loss_fn=per_task_loss,
        loss_names=TASKS[:2],
    )  # fmt: skip
    assert lesions.groups.tolist() == list(TASKS[:2])
    assert lesions.effect.shape == (starts[-1], 2)
    # some units serve each task (the xor task needs hidden units: it is not linear)
    assert (lesions.labels == 0).sum() >= 3 and (lesions.labels == 1).sum() >= 3


def test_input_dependence_sees_which_task_inputs_move_a_unit():
    from saeatlas.demo.multitask import MultiTaskMLP, input_dependence, multitask_data

    torch.manual_seed(0)
    model = MultiTaskMLP().eval()
    with torch.no_grad():
        model.fc1.weight[:32, 64:] = 0  # units 0-31 of act1 read pixels only
        model.fc1.weight[32:, :64] = 0  # units 32-63 read the xor inputs only
    x, _ = multitask_data(0, repeats=1)
    dep = input_dependence(model, x)
    assert dep.shape == (64 + 48 + 32, 2)
    live = dep.sum(1) > 0
    assert np.all(dep[:32, 1] == 0) and np.all(dep[32:64, 0] == 0)
    assert live[:64].sum() > 40
    # deeper units read both groups, so they depend on both tasks' inputs
    assert np.all(dep[64:][live[64:]] > 0)


def test_ablation_cuts_texts_to_the_capture_max_length(tmp_path, minilm):
    from types import SimpleNamespace

    import pandas as pd

    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.structure.causal.ablation import ablate_atlas

    model, tokenizer = minilm
    texts = ["a long sentence " * 20, "another fairly long text " * 15, "short"]
    store = capture_activations(
        model,
        texts,
        ["encoder.layer.0"],
        tmp_path / "store",
        CaptureConfig(max_length=8),
        tokenizer=tokenizer,
        progress=False,
    )
    assert store.manifest.provenance["max_length"] == 8
    lengths = []

    def loss(output, batch):
        lengths.append(output.last_hidden_state.shape[1])
        return output.last_hidden_state.pow(2).mean(dim=(1, 2))

    def ablate(max_length):
        lengths.clear()
        ablate_modules(
            model,
            texts,
            store.layers,
            np.zeros(store.n_units, dtype=np.int64),
            unit_mean=store.mean,
            loss_fn=loss,
            n_random=0,
            tokenizer=tokenizer,
            max_length=max_length,
        )
        return max(lengths)

    assert ablate(8) == 8
    assert ablate(None) > 8  # without it the texts run to their full length
    # ablate_atlas takes the store's own max_length by default
    atlas = SimpleNamespace(
        summary={"layers": ["encoder.layer.0"]},
        units=pd.DataFrame({"module": np.zeros(store.n_units, dtype=np.int64)}),
        modules=pd.DataFrame({"module": [0]}),
    )
    lengths.clear()
    ablate_atlas(atlas, model, texts, store, loss_fn=loss, n_random=2, tokenizer=tokenizer)
    assert max(lengths) == 8 and atlas.summary["ablation"]


def test_units_are_set_where_each_layout_put_them():
    import torch

    from saeatlas.structure.causal.units import set_units

    rng = torch.Generator().manual_seed(0)
    idx, value = torch.tensor([7, 13]), torch.tensor([100.0, -100.0])
    # per-head [batch, pos, head, d_head]: unit = head * d_head + dim
    t = torch.randn(2, 3, 4, 5, generator=rng)
    ref = t.clone()
    set_units(t, "head", idx, value)
    ref[:, :, 1, 2], ref[:, :, 2, 3] = 100.0, -100.0
    assert torch.equal(t, ref)
    # attention pattern [batch, head, q, k]: unit = head * k + key, for every query
    t = torch.randn(2, 4, 3, 5, generator=rng)
    ref = t.clone()
    set_units(t, "pattern", idx, value)
    ref[:, 1, :, 2], ref[:, 2, :, 3] = 100.0, -100.0
    assert torch.equal(t, ref)
    # conv maps: channels at every position; tokens: the last dimension
    t = torch.randn(2, 16, 3, 3, generator=rng)
    ref = t.clone()
    set_units(t, "position", idx, value)
    ref[:, 7], ref[:, 13] = 100.0, -100.0
    assert torch.equal(t, ref)
    t = torch.randn(2, 3, 16, generator=rng)
    ref = t.clone()
    set_units(t, "token", idx, value)
    ref[..., 7], ref[..., 13] = 100.0, -100.0
    assert torch.equal(t, ref)
