"""Capture edge cases of the fifth hostile sweep: a resume of a model whose code
changed, layers that give no units, and uncommon output dtypes."""

from __future__ import annotations

import textwrap

import pytest
import torch

from saeatlas.capture import CaptureConfig, capture_activations
from saeatlas.errors import ConfigError

QUIET = {"progress": False}

NET = textwrap.dedent(
    """
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lin = torch.nn.Linear(8, 6)
            self.out = torch.nn.Identity()

        def forward(self, x):
            return self.out(torch.ACTIVATION(self.lin(x)))
    """
)


def _net(activation: str) -> torch.nn.Module:
    """``Net`` from its file, as written with ``activation``: the same class name,
    modules and weights either way (a model file edited between two runs)."""
    namespace: dict = {}
    exec(NET.replace("ACTIVATION", activation), namespace)
    return namespace["Net"]()


class _Interrupted:
    """Batches of 10 rows that stop, like a killed process, before batch ``n``."""

    def __init__(self, x: torch.Tensor, n: int) -> None:
        self.x, self.n = x, n

    def __len__(self) -> int:
        return len(self.x) // 10

    def __iter__(self):
        for i in range(len(self)):
            if i == self.n:
                raise KeyboardInterrupt("killed")
            yield self.x[10 * i : 10 * (i + 1)]


def test_resume_with_a_forward_edited_to_another_function_is_refused(tmp_path):
    """`torch.relu` edited to `torch.tanh` in a model file's forward changes no module
    and no weight: the resumed store held ReLU rows, then Tanh rows, declared complete."""
    x, cfg = (
        torch.randn(80, 8, generator=torch.Generator().manual_seed(0)),
        CaptureConfig(shard_rows=10),
    )
    with pytest.raises(KeyboardInterrupt):
        capture_activations(_net("relu"), _Interrupted(x, 5), ["out"], tmp_path / "s", cfg, **QUIET)
    with pytest.raises(ConfigError, match="this run's model differ"):
        capture_activations(
            _net("tanh"), _Interrupted(x, 99), ["out"], tmp_path / "s", cfg, resume=True, **QUIET
        )
    store = capture_activations(
        _net("relu"), _Interrupted(x, 99), ["out"], tmp_path / "s", cfg, resume=True, **QUIET
    )
    with torch.no_grad():
        expected = _net("relu")(x)
    torch.testing.assert_close(store.read(), expected)


class _Then(torch.nn.Module):
    """A linear layer, then ``fn`` of its output in a module of its own (``then``)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.lin, self.fn = torch.nn.Linear(4, 6), fn
        self.then = torch.nn.Identity()

    def forward(self, x):
        return self.then(self.fn(self.lin(x)))


@pytest.mark.parametrize(
    "fn",
    [lambda h: h[:, :0], lambda h: h[:, :0, None, None]],
    ids=["[batch, 0]", "[batch, 0, 1, 1]"],
)
def test_a_layer_without_units_is_named(tmp_path, fn):
    """It ended in 'Layer covers columns 0:0, expected to start at 0', a store error
    that did not say the layer gives nothing to record."""
    from saeatlas.errors import ShapeError

    with pytest.raises(ShapeError, match=r"Layer 'then' gives no units \(output shape \[5, 0"):
        capture_activations(
            _Then(fn),
            torch.randn(5, 4),
            ["lin", "then"],
            tmp_path / "s",
            CaptureConfig(layout="image"),
            **QUIET,
        )
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.uint16, torch.bool])
def test_outputs_of_uncommon_dtypes_are_stored_as_float32(tmp_path, dtype):
    """float8 and uint16 outputs ended in a traceback (torch has no min/max for them,
    which the NaN/Inf check takes)."""
    torch.manual_seed(0)
    net = _Then(lambda h: (h * 4).abs().to(dtype))
    x = torch.randn(7, 4)
    store = capture_activations(net, x, ["then"], tmp_path / "s", **QUIET)
    with torch.no_grad():
        expected = (net.lin(x) * 4).abs().to(dtype).float()
    torch.testing.assert_close(store.read(), expected)
    torch.testing.assert_close(torch.as_tensor(store.mean), expected.double().mean(0))
