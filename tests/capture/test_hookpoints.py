import pytest
import torch
from torch import nn

from saeatlas.capture import resolve_hookpoints
from saeatlas.capture.hookpoints import natural_key
from saeatlas.errors import HookpointError


class Stack(nn.Module):
    def __init__(self, n: int = 12) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(4, 4), nn.ReLU()) for _ in range(n))


def names(model, patterns):
    return [hp.name for hp in resolve_hookpoints(model, patterns)]


def test_exact_glob_regex_and_natural_order():
    m = Stack()
    assert names(m, "layers.3") == ["layers.3"]
    got = names(m, ["layers.*.0"])
    assert got == [f"layers.{i}.0" for i in range(12)]  # 2 before 10: natural order
    assert names(m, [r"re:layers\.1\d"]) == ["layers.10", "layers.11"]
    # duplicates across patterns are dropped
    assert names(m, ["layers.1", "layers.1", "re:layers\\.1"]) == ["layers.1"]


def test_input_suffix_records_input():
    m = Stack(2)
    hps = resolve_hookpoints(m, ["layers.0.1:input", "layers.0.1"])
    assert [(h.name, h.record_input) for h in hps] == [
        ("layers.0.1", False),
        ("layers.0.1:input", True),
    ]
    assert hps[1].module is m.layers[0][1]


def test_unknown_name_lists_closest():
    m = Stack(3)
    with pytest.raises(HookpointError, match=r"'layers\.0\.2'.*Did you mean 'layers\.0\.1'"):
        resolve_hookpoints(m, ["layers.0.2"])
    with pytest.raises(HookpointError, match="Did you mean 'layers"):
        resolve_hookpoints(m, ["layerz.*"])
    with pytest.raises(HookpointError, match="Bad regex"):
        resolve_hookpoints(m, ["re:layers.("])
    with pytest.raises(HookpointError, match="No layers given"):
        resolve_hookpoints(m, [])


def test_no_close_match_lists_the_models_first_names():
    m = Stack(3)  # 10 modules: layers, layers.0, layers.0.0, layers.0.1, layers.1, ...
    with pytest.raises(
        HookpointError,
        match=r"'block\*'\. Its modules are 'layers', 'layers\.0', .*'layers\.2\.1'\. List the "
        r"names with `saeatlas layers MODEL`",
    ):
        resolve_hookpoints(m, ["block*"])
    with pytest.raises(HookpointError, match=r"'layers\.2\.1' and 27 more\."):
        resolve_hookpoints(Stack(12), ["block*"])


def test_natural_key():
    assert sorted(["b.10", "b.2", "a.1"], key=natural_key) == ["a.1", "b.2", "b.10"]


def test_hookpoint_resolution_does_not_touch_model():
    m = Stack(2)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    resolve_hookpoints(m, "layers.*")
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert all(not mod._forward_hooks for mod in m.modules())


@pytest.mark.parametrize("bad", [3, nn.ReLU(), None])
def test_layer_names_that_are_not_strings_are_an_error(bad):
    m = Stack(2)
    with pytest.raises(HookpointError, match=f"must be strings, not {type(bad).__name__}"):
        resolve_hookpoints(m, ["layers.0", bad])


def test_layer_names_may_come_from_a_generator():
    assert names(Stack(2), (f"layers.{i}" for i in range(2))) == ["layers.0", "layers.1"]


class _BertishLayer(nn.Module):
    """A layer with a forward of its own (a ModuleDict is never called, so no layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.ModuleDict({"output": nn.Linear(4, 4)})
        self.output = nn.ReLU()

    def forward(self, x):
        return self.output(self.attention["output"](x))


class Bertish(nn.Module):
    """A BERT's naming: each layer has an `output` and an `attention.output`."""

    def __init__(self, n: int = 3) -> None:
        super().__init__()
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(_BertishLayer() for _ in range(n))})


def test_a_star_stops_at_dots_and_two_stars_cross_them():
    m = Bertish()
    # `*` once took each layer's attention.output too, doubling the layers without a word
    assert names(m, "encoder.layer.*.output") == [f"encoder.layer.{i}.output" for i in range(3)]
    both = names(m, "encoder.**.output")
    assert set(both) == {f"encoder.layer.{i}.output" for i in range(3)} | {
        f"encoder.layer.{i}.attention.output" for i in range(3)
    }
    assert names(m, "encoder.layer.[02].output") == [
        "encoder.layer.0.output",
        "encoder.layer.2.output",
    ]
    assert names(m, "encoder.layer.[!02].output") == ["encoder.layer.1.output"]
    assert names(m, "encoder.layer.?") == [f"encoder.layer.{i}" for i in range(3)]
    assert names(m, "encoder.layer.*") == [f"encoder.layer.{i}" for i in range(3)]


def test_a_star_that_would_need_to_cross_dots_says_so():
    m = Bertish()
    with pytest.raises(HookpointError, match=r"A `\*` stops at dots.*'encoder\.\*\*\.output'"):
        resolve_hookpoints(m, ["encoder.*.output"])


def test_layout_patterns_read_globs_as_layer_patterns_do():
    from saeatlas.capture.layouts import named_layout

    assert named_layout("blocks.3.hook_z", "blocks.*.hook_z=heads") == "heads"
    assert named_layout("blocks.3.attn.hook_z", "blocks.*.hook_z=heads") is None
    assert named_layout("blocks.3.attn.hook_z", "blocks.**.hook_z=heads") == "heads"
