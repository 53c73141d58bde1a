"""Eleventh hostile sweep, capture half: what a resumed capture judges, its inputs, its
model's mode."""

from __future__ import annotations

import warnings

import pytest
import torch


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def test_a_resumed_half_precision_capture_names_the_units_its_first_run_rounded(
    tmp_path, monkeypatch
):
    """The float16 'unit became constant' warning saw only the batches of the run that
    completed the store: a unit that varied only in the rows of a killed first run (and
    that float16 made constant) was not named after `capture --resume`."""
    import saeatlas.store.commit as commit_module
    from saeatlas.capture import CaptureConfig, capture_activations

    x = torch.randn(60, 3, generator=torch.Generator().manual_seed(0))
    x[:, 1] = 1e4
    x[:32, 1] += torch.linspace(-3, 3, 32)  # varies in the first shard's rows only
    model = torch.nn.Sequential(torch.nn.Identity())
    cfg = CaptureConfig(batch_size=16, shard_rows=32, store_dtype="float16")
    real, calls = commit_module.write_shard, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(commit_module, "write_shard", dying)
    with pytest.raises(Killed):
        capture_activations(model, x, ["0"], tmp_path / "s", cfg, progress=False)
    monkeypatch.undo()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        store = capture_activations(
            model, x, ["0"], tmp_path / "s", cfg, resume=True, progress=False
        )
    assert store.n_rows == 60 and store.std[1] == 0
    said = [str(w.message) for w in seen if "constant in the" in str(w.message)]
    assert len(said) == 1 and "unit 1 of layer '0'" in said[0], said
    assert "from 9997 to 10003" in said[0], said


@pytest.mark.parametrize("text", ['""', '"  "', '{"text": ""}', '{"text": "\\t"}'])
def test_an_empty_text_in_a_jsonl_is_refused_naming_its_line(tmp_path, outputs, run_cli, text):
    """A .txt file's blank lines are skipped, but `{"text": ""}` in a .jsonl was kept: its
    sample had no tokens, so no rows, without a word."""
    cli, one_line = run_cli
    inputs = tmp_path / "t.jsonl"
    inputs.write_text('{"text": "abc"}\n' + text + '\n"de"\n')
    r = cli("capture", "--model", outputs.model, "--inputs", inputs, "--layers", "1", "--out",
            tmp_path / "s", "-q")  # fmt: skip
    one_line(r, "t.jsonl' line 2 holds an empty text", "drop that line")
    assert not (tmp_path / "s").exists()


def _capture(path, resume=False, store_dtype="float32"):
    from saeatlas.capture import CaptureConfig, capture_activations

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    x = torch.randn(90, 4, generator=torch.Generator().manual_seed(0))
    cfg = CaptureConfig(batch_size=7, shard_rows=32, store_dtype=store_dtype)
    return capture_activations(model, x, ["0", "2"], path, cfg, resume=resume, progress=False)


def _killed_at_shard(path, monkeypatch, n, store_dtype="float32"):
    """A capture of :func:`_capture` killed when it writes its ``n``-th shard."""
    import saeatlas.store.commit as commit_module

    real, calls = commit_module.write_shard, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(commit_module, "write_shard", dying)
    with pytest.raises(Killed):
        _capture(path, store_dtype=store_dtype)
    monkeypatch.undo()


def test_temporary_files_of_a_killed_manifest_or_rows_write_do_not_end_in_the_store(
    tmp_path, monkeypatch
):
    """A kill -9 while rank 0 wrote rows.parquet or manifest.json (atomic: a temporary
    file beside it, then a rename) left `.tmp-rows.parquet-*` or `.tmp-manifest.json-*`
    in the partial store; `capture --resume` moved them into the finished store."""
    from saeatlas.store.atomic import partial_dir

    store = tmp_path / "s"
    _killed_at_shard(store, monkeypatch, 2)
    work = partial_dir(store)
    (work / ".tmp-rows.parquet-k1ll").write_bytes(b"x" * 100)
    (work / ".tmp-manifest.json-k1ll").write_bytes(b"{")
    assert _capture(store, resume=True).n_rows == 90
    assert not [p.name for p in store.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("out", ["file", "store"])
def test_run_check_refuses_the_run_directory_the_run_would_refuse(tmp_path, outputs, run_cli, out):
    """`saeatlas run --check` said 'valid' for a config whose `out` is a file (or a store
    directory): the run itself then stopped on it."""
    cli, one_line = run_cli
    (tmp_path / "file").write_text("x\n")
    target = tmp_path / "file" if out == "file" else outputs.store
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {outputs.model}\ninputs: {outputs.inputs}\nlayers: ['1']\nout: {target}\n"
    )
    why = "is not a directory" if out == "file" else "not a run directory"
    one_line(cli("run", config, "--check"), why)
    one_line(cli("run", config, "--check", "--out", target), why)
    assert cli("run", config, "--check", "--out", tmp_path / "new").exit_code == 0
    assert not (tmp_path / "new").exists()


def test_the_range_before_rounding_is_merged_over_the_ranks_of_a_capture(tmp_path):
    """Under torchrun each rank judged the float16 rounding on its own share of rows:
    a unit that varied only across the ranks' shares (constant within each) was not
    named. Rank 0 now judges the range of every rank's rows."""
    from saeatlas.store import LayerSpec
    from saeatlas.store.writer import StoreWriter

    writers = [StoreWriter(tmp_path / "s", dtype="float16", rank=r, world=2) for r in range(2)]
    for r, w in enumerate(writers):
        w.start([LayerSpec("a", 0, 2, (2,))])
        x = torch.full((5, 2), 1e4 + 3 * r)  # one value per rank
        w.value_range = torch.aminmax(x, dim=0)
        w.add(x, {"sample": torch.arange(5).numpy() + 5 * r}, n_samples=5)
    writers[0].complete([w.finish() for w in writers])
    lo, hi = writers[0].value_range
    assert lo.tolist() == [1e4, 1e4] and hi.tolist() == [10003, 10003]


def test_texts_without_tokens_are_named_not_dropped_without_a_word(
    tmp_path, tiny_gpt2, make_char_tokenizer
):
    """`capture_activations(model, ["abc", "", "de"])`: the empty text's sample had no
    rows in the store, and nothing said so."""
    from saeatlas.capture import CaptureConfig, capture_activations

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        store = capture_activations(
            tiny_gpt2, ["abc", "", "de"], ["transformer.h.0"], tmp_path / "s",
            CaptureConfig(batch_size=2), tokenizer=make_char_tokenizer(), progress=False,
        )  # fmt: skip
    assert sorted(set(store.rows(["sample"]).column("sample").to_pylist())) == [0, 2]
    said = [str(w.message) for w in seen if "have no tokens" in str(w.message)]
    assert len(said) == 1 and "1 of 3 texts" in said[0] and "text 1, is ''" in said[0], said
