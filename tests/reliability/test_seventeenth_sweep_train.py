"""Seventeenth hostile sweep, training, sweep, CLI and config files half: long bad values
quoted whole."""

from __future__ import annotations


def test_a_long_bad_choice_is_quoted_cut_short(guarded, run_cli, tmp_path):
    """A setting of fixed choices given a long text (`architecture:` of 100,000 characters
    in a YAML config, a long `--layout`, `--device`, `--model-class` or `sweep --over`)
    was quoted whole: one line of 100,000 characters, where other bad values are cut
    short."""
    cli, one_line = run_cli
    long = "x" * 100_000
    (tmp_path / "c.yaml").write_text(f"architecture: {long}\n")
    train = ["train", "--acts", guarded.store, "--out", guarded.root / "new", "-q"]
    capture = ["capture", "--model", guarded.model, "--inputs", guarded.inputs, "--layers", "1"]
    capture += ["--out", guarded.root / "new", "-q"]
    sweep = ["sweep", "--acts", guarded.store, "--out", guarded.root / "new", "--values", "2", "4"]
    for args, needle in (
        ((*train, "--config", tmp_path / "c.yaml"), "Unknown `architecture` 'xxx"),
        ((*train, "--device", long), "Unknown --device 'xxx"),
        ((*capture, "--layout", long), "Unknown `layout` 'xxx"),
        ((*capture, "--model-class", long), "Unknown --model-class 'xxx"),
        ((*capture, "--store-dtype", long), "Unknown `store_dtype` 'xxx"),
        ((*sweep, "--over", long), "Cannot sweep over 'xxx"),
    ):
        line = one_line(cli(*args), needle)
        assert len(line) < 400, line[:400]
    assert not (guarded.root / "new").exists()
