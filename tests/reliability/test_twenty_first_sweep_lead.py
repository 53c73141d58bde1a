"""Twenty-first sweep (the lead's): a model without submodules, whose layer list was an
empty table."""

import numpy as np
import pytest

LEAF = """import torch


def leaf():
    return torch.nn.LSTM(3, 4, batch_first=True)


def wrapped():
    return torch.nn.Sequential(torch.nn.LSTM(3, 4, batch_first=True))
"""


@pytest.fixture
def leaf(tmp_path):
    (tmp_path / "m.py").write_text(LEAF)
    np.save(tmp_path / "x.npy", np.ones((4, 5, 3), dtype=np.float32))
    return tmp_path


def test_a_model_without_submodules_is_told_how_to_record_it(leaf, run_cli):
    """`saeatlas layers` of a model with no submodules (an LSTM) printed an empty table,
    and capture's message sent the user back to that table; both now say that the
    model's own output is recorded by wrapping it, and the advice works."""
    cli, one_line = run_cli
    x = leaf / "x.npy"
    spec = f"{leaf / 'm.py'}:leaf"
    advice = "torch.nn.Sequential(model)"
    one_line(cli("layers", spec, "--inputs", x), "LSTM has no submodules", advice)
    one_line(
        cli("capture", "--model", spec, "--inputs", x, "--layers", "*", "--out", leaf / "s"),
        "LSTM has no submodules",
        advice,
    )
    assert not (leaf / "s").exists()
    wrapped = f"{leaf / 'm.py'}:wrapped"
    listed = cli("layers", wrapped, "--inputs", x)
    assert listed.exit_code == 0 and "LSTM" in listed.output, listed.output
    r = cli(
        "capture", "--model", wrapped, "--inputs", x, "--layers", "0", "--out", leaf / "s", "-q"
    )
    assert r.exit_code == 0, r.output

    from saeatlas.store import ActivationStore

    store = ActivationStore.open(leaf / "s")
    assert store.n_rows == 4 * 5 and store.n_units == 4


def test_validate_refuses_rows_that_cannot_be_held_in_memory(run_cli):
    """`validate --rows 10**8` generated planted data for minutes before it ran out of
    memory, and `10**30` was refused naming `n_rows`, a setting validate does not have."""
    cli, one_line = run_cli
    for rows in (10**12, 10**30):
        one_line(cli("validate", "--rows", str(rows), "--cases", "easy"), "--rows", "at most")


def test_list_layers_takes_an_array_as_capture_does():
    """From Python, `list_layers(model, array)` ended in the forward pass's "must be
    Tensor", where `capture_activations` takes the same array."""
    import torch

    from saeatlas.capture import list_layers

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = np.random.default_rng(0).normal(size=(3, 4))  # float64, as numpy makes it
    assert list_layers(model, x) == list_layers(model, torch.from_numpy(x).float())


def test_batches_whose_labels_stop_say_how_to_give_them(tmp_path):
    """`(x, y)` batches whose `y` was one label per sample in one batch and not in the
    next (left out as token-level targets) ended in "Row metadata columns changed from
    ['label', 'position', 'sample'] to ['position', 'sample']", naming no cause."""
    import torch

    from saeatlas.capture import capture_activations
    from saeatlas.errors import StoreError

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    x = torch.ones(5, 4)
    for ys in ((torch.arange(5), torch.arange(3)), (torch.arange(3), torch.arange(5))):
        with pytest.raises(StoreError, match="one label per sample"):
            capture_activations(model, [(x, y) for y in ys], ["1"], tmp_path / "s", progress=False)
        assert not (tmp_path / "s").exists()
