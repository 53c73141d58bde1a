"""Labels the ablation splits its effect by (eighth sweep): a None, NaN or mixed label
given from Python ended in a traceback, or became a class of no input whose effects
were NaN. Each is refused in one line naming the label."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.parametrize(
    "labels,loss,needle",
    [
        ([None] * 5, "ce", "a label is None"),  # AttributeError: 'NoneType' ... 'item'
        ([1, None, 2, 0, 1], "sum", "Label 1 is None"),  # TypeError in np.unique's sort
        (["a", "b", "a", "b", None], "sum", "Label 4 is None"),
        ([np.nan, 1.0, 1.0, 0.0, 0.0], "sum", "Label 0 is nan"),  # a class of no input
    ],
)
def test_labels_the_ablation_cannot_split_by_are_one_error(labels, loss, needle):
    from saeatlas.errors import ConfigError
    from saeatlas.store import LayerSpec
    from saeatlas.structure.causal.ablation import ablate_modules
    from saeatlas.structure.causal.ablation_inputs import check_ablation_inputs

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    x = torch.randn(5, 4)
    kwargs = {} if loss == "ce" else {"loss_fn": lambda out, batch: out.pow(2).sum(1)}
    layers = [LayerSpec("1", 0, 6, (None, 6))]
    modules = np.array([0, 0, 1, 1, -1, -1])
    with pytest.raises(ConfigError, match=needle):
        ablate_modules(net, x, layers, modules, labels=labels, mode="zero", n_random=2, **kwargs)
    with pytest.raises(ConfigError, match=needle):  # before an analysis, as the CLI checks
        check_ablation_inputs(net, x, labels, layers=layers, **kwargs)


def test_class_indices_read_from_a_text_file_are_classes():
    # a text file of class indices (`--labels labels.txt`, one per line, as the README
    # offers) was refused whole: "a label is '2'"; and '1' beside '1.0' were two classes
    # of the per-label split, one class of the loss
    from saeatlas.store import LayerSpec
    from saeatlas.structure.causal.ablation import ablate_modules

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    x = torch.randn(6, 4)
    layers = [LayerSpec("1", 0, 6, (None, 6))]
    modules = np.array([0, 0, 1, 1, -1, -1])
    args = dict(mode="zero", n_random=2)
    text = ablate_modules(net, x, layers, modules, labels=np.array(["0", "1.0", "2", "1", "0", "2"]), **args)  # fmt: skip
    ints = ablate_modules(net, x, layers, modules, labels=np.array([0, 1, 2, 1, 0, 2]), **args)
    assert text.classes.tolist() == ints.classes.tolist() == [0, 1, 2]
    np.testing.assert_allclose(text.effect_by_class, ints.effect_by_class)
