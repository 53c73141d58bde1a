"""Twenty-third hostile sweep, capture and the activation store: layers written as one
comma-separated list or by number, and the store's own files read back."""

from __future__ import annotations

import json
import re
import textwrap

import pytest

#: A model whose modules have names, not numbers (a Sequential's are its indices).
NAMED_MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    def build():
        torch.manual_seed(0)
        return Net()
    """
)


def _capture(cli, outputs, out, *flags, model=None):
    """`saeatlas capture` of the protected model (or ``model``) on its inputs."""
    args = ["--model", model or outputs.model, "--inputs", outputs.inputs]
    return cli("capture", *args, "--out", out, "-q", *flags)


@pytest.mark.parametrize(
    "layers, named, needle",
    [
        # "Did you mean '3', '1'?": the user was left to guess that they are two values
        (
            "1,3",
            False,
            "Give each as its own value: `--layers 1 3` (from Python, the list ['1', '3'])",
        ),
        ("1, 3:input", False, "`--layers 1 3:input`"),
        ("fc1,fc2", True, "`--layers fc1 fc2`"),
        # a number of a model whose modules have names was told "Did you mean 'fc1'?"
        ("1", True, "not numbered by their place in the model: its modules are 'fc1', 'act'"),
    ],
)
def test_layers_written_as_a_list_or_by_number_say_how_to_name_them(
    tmp_path, guarded, run_cli, layers, named, needle
):
    cli, assert_one_line_error = run_cli
    model = None
    if named:
        (tmp_path / "named.py").write_text(NAMED_MODEL)
        model = f"{tmp_path / 'named.py'}:build"
    r = _capture(cli, guarded, tmp_path / "store", "--layers", layers, model=model)
    assert_one_line_error(r, needle)
    assert not (tmp_path / "store").exists()


def test_a_comma_in_a_regex_or_a_glob_set_stays_the_patterns_own(guarded):
    """A comma is no list separator inside a regex (`{1,3}`) or a glob's set (`[1,3]`)."""
    from saeatlas.capture import load_model, resolve_hookpoints

    model = load_model(guarded.model).model
    assert [h.name for h in resolve_hookpoints(model, ["[1,3]"])] == ["1", "3"]
    assert [h.name for h in resolve_hookpoints(model, ["re:[13]{1,1}"])] == ["1", "3"]


def test_a_run_configs_layers_as_one_text_of_commas_are_told_the_list(tmp_path, guarded, run_cli):
    """`layers: "1,3"` in a run config was told to write ['1,3'], one layer of that name
    (which then matched nothing)."""
    cli, assert_one_line_error = run_cli
    p = tmp_path / "run.yaml"
    p.write_text(f"model: {guarded.model}\ninputs: {guarded.inputs}\nlayers: '1,3'\n")
    assert_one_line_error(cli("run", p, "--check"), "Write the list as ['1', '3']")


#: Edits of a JSON file's text: a key given twice (read last-wins: the manifest's own
#: number, the layer's other name), a number of 5000 digits and lists nested past
#: Python's stack (each ended in a ValueError or RecursionError traceback).
_JSON_EDITS = {
    "key twice": (lambda t, key, value: t.replace(f'"{key}": ', f'"{key}": {value}, "{key}": ', 1)),
    "long number": (
        lambda t, key, value: t.replace(f'"{key}": ', f'"{key}": 1{"0" * 5000}, "x": ', 1)
    ),
    "deep": (
        lambda t, key, value: t.replace(
            f'"{key}": ', f'"x": {"[" * 50000}{"]" * 50000}, "{key}": ', 1
        )
    ),
}
_JSON_NEEDLES = {
    "key twice": "is given twice in one object",
    "long number": "a number of more than 4,300 digits",
    "deep": "nested too deeply",
}


@pytest.mark.parametrize("edit", list(_JSON_EDITS))
def test_a_manifest_edited_by_hand_is_read_or_refused_whole(tmp_path, make_store, run_cli, edit):
    cli, assert_one_line_error = run_cli
    store = make_store(tmp_path / "store")
    path = store / "manifest.json"
    text = json.dumps(json.loads(path.read_text()))
    path.write_text(_JSON_EDITS[edit](text, "n_rows", 1))
    before = path.read_bytes()
    assert_one_line_error(
        cli("info", store), "manifest.json' is not valid JSON", _JSON_NEEDLES[edit]
    )
    assert path.read_bytes() == before


@pytest.mark.parametrize("edit", ["key twice", "deep"])  # its long number was refused
def test_a_layers_json_edited_by_hand_is_read_or_refused_whole(tmp_path, run_cli, edit):
    import numpy as np

    cli, assert_one_line_error = run_cli
    np.save(tmp_path / "acts.npy", np.ones((20, 4), np.float32))
    layers = '[{"name": "a", "start": 0, "stop": 4}]'
    (tmp_path / "acts.layers.json").write_text(_JSON_EDITS[edit](layers, "name", '"b"'))
    assert_one_line_error(
        cli("info", tmp_path / "acts.npy"), "acts.layers.json", _JSON_NEEDLES[edit]
    )


def test_a_report_reads_past_a_store_manifest_nested_too_deeply(tmp_path, make_store):
    """The report reads its store's manifest only for layer names and shapes: one nested
    past Python's stack ended it in a RecursionError traceback."""
    from saeatlas.report.store_facts import store_facts

    store = make_store(tmp_path / "store")
    text = (store / "manifest.json").read_text()
    (store / "manifest.json").write_text(_JSON_EDITS["deep"](text, "n_rows", 0))
    facts = store_facts({"model": "m", "store": str(store)})
    assert facts.model == "m"


@pytest.mark.parametrize("edit", list(_JSON_EDITS))
@pytest.mark.parametrize("name", ["labels.jsonl", "labels.json"])
def test_label_files_of_json_are_read_or_refused_whole(tmp_path, guarded, run_cli, name, edit):
    """`{"label": 1, "label": 2}` was read as 2 without a word; a 5000-digit label and a
    line nested past Python's stack ended the capture in a traceback."""
    cli, assert_one_line_error = run_cli
    if name.endswith(".jsonl"):
        text = "\n".join(['{"label": 0}'] * 299 + [_JSON_EDITS[edit]('{"label": 1}', "label", 2)])
    else:
        text = _JSON_EDITS[edit]('{"label": 1}', "label", 2)  # not a list: refused unedited
    (tmp_path / name).write_text(text)
    r = _capture(cli, guarded, tmp_path / "store", "--layers", "1", "--labels", tmp_path / name)
    assert_one_line_error(r, f"{name}", "is not JSON", _JSON_NEEDLES[edit])
    assert not (tmp_path / "store").exists()


def test_texts_of_jsonl_are_read_or_refused_whole(tmp_path):
    from saeatlas.capture import load_inputs
    from saeatlas.errors import InputsError

    for edit, needle in _JSON_NEEDLES.items():
        (tmp_path / "t.jsonl").write_text(_JSON_EDITS[edit]('{"text": "ab"}', "text", '"cd"'))
        with pytest.raises(InputsError, match=needle):
            load_inputs(tmp_path / "t.jsonl")


@pytest.mark.parametrize("dtype", [">i8", ">f4", ">i4"])
def test_big_endian_labels_are_stored_by_value(tmp_path, guarded, run_cli, dtype):
    """A `.npy` of labels saved big-endian (`>i8`) was refused in Arrow's words, "Byte-swapped
    arrays not supported", with advice to give labels that are numbers: they were."""
    import numpy as np
    import pyarrow.parquet as pq

    cli, _ = run_cli
    labels = np.arange(300) % 3
    np.save(tmp_path / "labels.npy", labels.astype(dtype))
    r = _capture(cli, guarded, tmp_path / "s", "--layers", "1", "--labels", tmp_path / "labels.npy")
    assert r.exit_code == 0, r.output
    stored = pq.read_table(tmp_path / "s" / "rows.parquet").column("label").to_numpy()
    assert (stored == labels).all()


def test_big_endian_labels_of_batches_are_stored_by_value(tmp_path):
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from saeatlas.capture import capture_activations

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    labels = (np.arange(20) % 3).astype(">i8")
    batches = [(torch.randn(10, 4), labels[i : i + 10]) for i in (0, 10)]
    capture_activations(model, batches, ["1"], tmp_path / "s", progress=False)
    stored = pq.read_table(tmp_path / "s" / "rows.parquet").column("label").to_numpy()
    assert (stored == np.arange(20) % 3).all()


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"shard_rows": 2.5}, "`shard_rows` must be a whole number, got 2.5"),  # TypeError
        ({"shard_rows": "8"}, "`shard_rows` must be a whole number"),
        ({"rank": "0"}, "`rank` must be a whole number"),
        ({"world": 0}, "`world` must be >= 1"),
        ({"provenance": [1]}, "`provenance` must be a dict of JSON values"),
        ({"provenance": {"x": {1}}}, "`provenance` must be a dict"),  # after the work
        ({"job": {"x": object()}}, "`job` must be a dict"),
        # a complete store whose manifest every reader refused
        ({"job": {"settings": [1]}}, "`job.settings` [1] in its provenance"),
        ({"provenance": {"max_length": 0}}, "`max_length` 0 in its provenance"),
        ({"overwrite": "no"}, "`overwrite` must be True or False"),  # replaced the store
    ],
)
def test_the_store_writer_checks_its_arguments_first(tmp_path, kwargs, needle):
    import torch

    from saeatlas.errors import ConfigError
    from saeatlas.store import ActivationStore

    _write(tmp_path / "store", torch.ones(20, 3))
    kwargs.setdefault("overwrite", True)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        _write(tmp_path / "store", torch.zeros(20, 3), **kwargs)
    assert ActivationStore.open(tmp_path / "store").read().eq(1).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def _write(path, rows, **kwargs):
    """Rows of one layer 'a' given to a `StoreWriter` (aborted when it fails)."""
    import numpy as np

    from saeatlas.store import LayerSpec, StoreWriter

    writer = StoreWriter(path, **{"shard_rows": 8, **kwargs})
    try:
        writer.start([LayerSpec("a", 0, 3)])
        n = len(rows)
        writer.add(rows, {"sample": np.arange(n), "position": np.zeros(n, np.int64)}, n_samples=n)
        writer.close()
    except BaseException:
        writer.abort()
        raise


@pytest.mark.parametrize(
    "meta, needle",
    [
        # written, then refused by `info --verify` ("lists row 19 at position 0")
        ({"row": "reversed"}, "and no `row`, which the writer numbers"),
        # written, then refused by the analysis ("The store's rows have no column 'sample'")
        ({"sample": None}, "must hold `sample`, each row's sample as a whole number (got none)"),
        ({"sample": "float"}, "(got float64)"),
        ({"z": "nested"}, "{'z': 20}"),  # pyarrow's ArrowInvalid
    ],
)
def test_the_store_writer_refuses_row_metadata_its_readers_refuse(tmp_path, meta, needle):
    import numpy as np
    import torch

    from saeatlas.errors import StoreError
    from saeatlas.store import LayerSpec, StoreWriter

    columns = {"sample": np.arange(20), "position": np.zeros(20, np.int64)}
    made = {
        "reversed": np.arange(20)[::-1].copy(),
        "float": np.arange(20) * 1.0,
        "nested": np.zeros((20, 2)),
    }
    for key, kind in meta.items():
        if kind is None:
            columns.pop(key)
        else:
            columns[key] = made[kind]
    writer = StoreWriter(tmp_path / "store", shard_rows=8)
    writer.start([LayerSpec("a", 0, 3)])
    with pytest.raises(StoreError, match=re.escape(needle)):
        writer.add(torch.randn(20, 3), columns, n_samples=20)
    writer.abort()
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("counts", "needle"),
    [
        ({"n_samples": -1}, "`n_samples` must be >= 0, got -1."),
        ({"n_samples": 2.5}, "`n_samples` must be a whole number, got 2.5."),
        ({"n_samples": 20, "n_skipped": -3}, "`n_skipped` must be >= 0, got -3."),
        ({"n_samples": 20, "skip_rows": True}, "`skip_rows` must be a whole number, got True."),
    ],
)
def test_the_store_writer_takes_its_counts_as_whole_numbers(tmp_path, counts, needle):
    """`add(n_samples=-1)` was taken: every later batch's samples moved back by one (and
    2.5 made fractional sample ids) in a store its readers then refused or misread."""
    import numpy as np
    import torch

    from saeatlas.errors import ConfigError
    from saeatlas.store import LayerSpec, StoreWriter

    writer = StoreWriter(tmp_path / "store", shard_rows=8)
    writer.start([LayerSpec("a", 0, 3)])
    columns = {"sample": np.arange(20), "position": np.zeros(20, np.int64)}
    with pytest.raises(ConfigError, match=re.escape(needle)):
        writer.add(torch.randn(20, 3), columns, **counts)
    writer.abort()
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("layers", [[], [{"name": "a", "start": 0, "stop": 3}]])
def test_the_store_writer_names_the_layers_it_takes(tmp_path, layers):
    """Dicts ended in an AttributeError; no layers were refused only at the first rows, as
    "Rows have shapes [(20, 3)], expected [rows, 0]"."""
    from saeatlas.errors import ConfigError
    from saeatlas.store import StoreWriter

    writer = StoreWriter(tmp_path / "store")
    with pytest.raises(ConfigError, match=r"must be one or more LayerSpec\(name, start, stop\)"):
        writer.start(layers)
    writer.abort()


@pytest.mark.parametrize("key", ["n_texts_cut", "shard_rows", "job", "world_size"])
def test_provenance_may_not_give_what_the_capture_counts(tmp_path, key):
    """`provenance={"n_texts_cut": 5}` of an array's capture made `info` say "5 texts were
    cut"; `shard_rows` and `job` were replaced by the capture's own without a word."""
    import torch

    from saeatlas.capture import capture_activations
    from saeatlas.errors import ConfigError

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    with pytest.raises(ConfigError, match=f"`provenance` gives '{key}', which the capture"):
        capture_activations(
            model, torch.randn(8, 4), ["1"], tmp_path / "s", provenance={key: 5}, progress=False
        )
    assert not (tmp_path / "s").exists()


def test_layers_advises_only_what_it_has(tmp_path, guarded, run_cli):
    """A dry run of inputs of another width advised "--max-length for texts longer than it
    takes; a smaller --batch-size", flags `saeatlas layers` does not have."""
    import numpy as np

    cli, assert_one_line_error = run_cli
    np.save(tmp_path / "wide.npy", np.zeros((4, 7), np.float32))
    line = assert_one_line_error(
        cli("layers", guarded.model, "--inputs", tmp_path / "wide.npy"),
        "Check that the inputs fit the model (shape, dtype, token ids);",
    )
    assert "--max-length" not in line and "--batch-size" not in line


CONV_MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Scale(nn.Module):  # a 4-D output whose module says nothing of its layout
        def forward(self, x):
            return x * 1.0

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), Scale())
    """
)


@pytest.mark.parametrize("layout", ["1=image,1=heads", "*=heads,1=image"])
def test_a_layer_given_two_layouts_is_refused(tmp_path, run_cli, layout):
    """`--layout 1=image,1=heads` stored layer '1' by the first without a word (and
    `*=heads,1=image` ignored the layer's own)."""
    import numpy as np

    cli, assert_one_line_error = run_cli
    (tmp_path / "conv.py").write_text(CONV_MODEL)
    np.save(tmp_path / "img.npy", np.zeros((4, 2, 4, 4), np.float32))
    args = ["--model", f"{tmp_path / 'conv.py'}:build", "--inputs", tmp_path / "img.npy"]
    r = cli("capture", *args, "--layers", "1", "--layout", layout, "--out", tmp_path / "s", "-q")
    assert_one_line_error(r, "gives layer '1' two layouts", "give it one")
    assert not (tmp_path / "s").exists()
