"""4-D outputs: the layout comes from the module, the hook name or the user, never the rank."""

import pytest
import torch
from torch import nn

from saeatlas.capture import CaptureConfig, capture_activations
from saeatlas.capture.layouts import choose_layout, parse_layout, unit_names
from saeatlas.capture.rows import from_rows, to_rows
from saeatlas.errors import ConfigError, ShapeError

QUIET = {"progress": False}


class PerHead(nn.Module):
    """[batch, pos, 8] tokens -> ``split``: [batch, pos, 2 heads, 4] and ``scores``:
    [batch, 2 heads, pos, pos] (plain modules: nothing in their type names the layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.split = nn.Unflatten(2, (2, 4))
        self.scores = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.split(self.proj(x))
        q = z.transpose(1, 2)  # [batch, head, pos, d_head]
        pattern = self.scores((q @ q.transpose(-1, -2)).softmax(-1))
        return pattern.sum()


@pytest.fixture
def per_head():
    torch.manual_seed(0)
    return PerHead().eval()


def test_ambiguous_4d_output_is_an_error_naming_layout(tmp_path, per_head):
    x = torch.randn(3, 5, 8)
    with pytest.raises(ShapeError, match=r"'split' gives a 4-D output \[3, 5, 2, 4\].*--layout"):
        capture_activations(per_head, x, ["split"], tmp_path / "s", **QUIET)


def test_per_head_output_becomes_token_rows_of_head_by_dim_units(tmp_path, per_head):
    x = torch.randn(3, 5, 8)
    config = CaptureConfig(layout="split=heads")
    store = capture_activations(per_head, x, ["split"], tmp_path / "s", config, **QUIET)
    with torch.no_grad():
        z = per_head.split(per_head.proj(x))  # [3, 5, 2, 4]
    assert store.n_rows == 15 and store.n_units == 8
    torch.testing.assert_close(store.read(), z.reshape(15, 8))
    layer = store.layers[0]
    assert layer.layout == "head" and list(layer.shape) == [None, 5, 2, 4]
    assert unit_names(tuple(layer.shape), layer.layout, 8)[5] == "1.1"  # head 1, dim 1
    rows = store.rows().to_pydict()
    assert rows["sample"][:6] == [0] * 5 + [1] and rows["position"][:6] == [0, 1, 2, 3, 4, 0]


def test_a_layout_for_a_layer_not_recorded_is_an_error(tmp_path, per_head):
    """A misspelt LAYER=LAYOUT would leave that layer to the default layout."""
    config = CaptureConfig(layout="image,splt=heads")
    with pytest.raises(
        ConfigError, match=r"'splt', which names none of the recorded layers \['split'\]"
    ):
        capture_activations(
            per_head, torch.randn(3, 5, 8), ["split"], tmp_path / "s", config, **QUIET
        )
    assert not (tmp_path / "s").exists()


def test_pattern_rows_are_query_tokens_with_head_by_key_units(tmp_path, per_head):
    x = torch.randn(2, 4, 8)
    config = CaptureConfig(layout="pattern")
    store = capture_activations(per_head, x, ["scores"], tmp_path / "s", config, **QUIET)
    with torch.no_grad():
        q = per_head.split(per_head.proj(x)).transpose(1, 2)
        pattern = (q @ q.transpose(-1, -2)).softmax(-1)  # [2, 2 heads, 4 q, 4 k]
    got = store.read()
    assert got.shape == (8, 8) and store.layers[0].layout == "pattern"
    # row (sample 1, query 2), unit (head 1, key 3)
    assert got[1 * 4 + 2, 1 * 4 + 3] == pytest.approx(float(pattern[1, 1, 2, 3]))


def test_conv_layouts_come_from_the_module_and_flow_through_activations(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Dropout(0.0)),
        nn.AdaptiveAvgPool2d(1),
    )
    x = torch.randn(2, 1, 4, 4)
    store = capture_activations(net, x, ["0", "0.1"], tmp_path / "s", **QUIET)
    with torch.no_grad():
        h = net[0](x)
    assert [l.layout for l in store.layers] == ["position", "position"]
    torch.testing.assert_close(store.read()[:, :3], h.permute(0, 2, 3, 1).reshape(-1, 3))
    flat = nn.Sequential(nn.Linear(6, 12), nn.Unflatten(1, (3, 2, 2)), nn.ReLU())
    with pytest.raises(ShapeError, match=r"'2' gives a 4-D output.*--layout"):
        capture_activations(flat, torch.randn(2, 6), ["2"], tmp_path / "f", **QUIET)
    store = capture_activations(
        flat, torch.randn(2, 6), ["2"], tmp_path / "g", CaptureConfig(layout="image"), **QUIET
    )
    assert store.layers[0].layout == "position" and store.n_units == 3


def test_conv1d_maps_give_a_row_per_position_with_channel_units(tmp_path):
    """[batch, C, L] was read as [batch, seq, d]: rows per channel, positions as units."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(20, 2))
    x = torch.randn(2, 3, 5)
    store = capture_activations(net, x, ["0", "1"], tmp_path / "s", **QUIET)
    with torch.no_grad():
        h = net[0](x)
    assert [l.layout for l in store.layers] == ["position", "position"]
    assert (store.n_rows, store.n_units) == (10, 8)
    torch.testing.assert_close(store.read()[:, :4], h.permute(0, 2, 1).reshape(-1, 4))
    inputs = capture_activations(net, x, ["0:input"], tmp_path / "i", **QUIET)
    assert inputs.layers[0].layout == "position" and inputs.n_units == 3  # channels in
    torch.testing.assert_close(inputs.read(), x.permute(0, 2, 1).reshape(-1, 3))
    rows = to_rows(h, "0", layout="image")
    torch.testing.assert_close(from_rows(h, rows.x * 2, "0", rows.layout, None), 2 * h)
    with pytest.raises(ShapeError, match=r"channel-first maps \[2, 4, 5\].*attention mask"):
        to_rows(h, "0", mask=torch.ones(2, 5), layout="image")


@pytest.mark.parametrize("layout", ["heads", "pattern"])
def test_from_rows_inverts_to_rows_with_padding(layout):
    t = torch.randn(2, 3, 3, 4) if layout == "heads" else torch.randn(2, 2, 3, 3)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    rows = to_rows(t, "x", mask=mask, layout=layout)
    assert rows.x.shape[0] == 5
    back = from_rows(t, rows.x * 2, "x", rows.layout, mask)
    keep = mask.bool()
    moved = (lambda a: a) if layout == "heads" else (lambda a: a.transpose(1, 2))
    torch.testing.assert_close(moved(back)[keep], 2 * moved(t)[keep])
    torch.testing.assert_close(moved(back)[~keep], moved(t)[~keep])  # padding untouched


def test_layout_spec_is_validated_and_patterns_need_consent():
    assert parse_layout("heads,blocks.*.hook_pattern=pattern") == (
        "heads",
        (("blocks.*.hook_pattern", "pattern"),),
    )
    with pytest.raises(ConfigError, match="Unknown `layout` 'nchw'.*'image'"):
        CaptureConfig(layout="nchw")
    with pytest.raises(ShapeError, match="attention patterns.*--layout pattern"):
        choose_layout("blocks.0.attn.hook_pattern", "pattern", None)
    assert choose_layout("blocks.0.attn.hook_pattern", "pattern", "pattern") == "pattern"
    assert choose_layout("a.hook_z", "heads", "a.hook_z=image") == "image"
