"""Label and config files read as something they are not (ninth sweep): labels that np.array
would change without a word, TOML read as YAML."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "lines", ['1\n"1"\n2\n', '{"label": 3}\n"cat"\n'], ids=["1 and '1'", "number then string"]
)
def test_jsonl_labels_mixing_numbers_and_strings_are_refused(tmp_path, lines):
    """np.array made every label a string: 1 and "1" became one label, "1"."""
    from saeatlas.capture import load_labels
    from saeatlas.errors import InputsError

    (tmp_path / "l.jsonl").write_text(lines)
    with pytest.raises(
        InputsError, match=r"label 2 is a string and label 1 a number; .*all numbers"
    ):
        load_labels(tmp_path / "l.jsonl")


@pytest.mark.parametrize("verb", ["run", "train"])
def test_a_toml_config_is_named_as_toml(tmp_path, run_cli, verb):
    """A TOML file was read as YAML: 'must hold a mapping of settings, not str', which
    did not say that TOML is not read."""
    cli, one_line = run_cli
    (tmp_path / "run.toml").write_text('model = "m.py:f"\ninputs = "x.npy"\nlayers = ["0"]\n')
    args = {
        "run": ["run", tmp_path / "run.toml", "--check"],
        "train": ["train", "--acts", tmp_path / "x.npy", "--out", tmp_path / "s", "--config",
                  tmp_path / "run.toml"],
    }[verb]  # fmt: skip
    one_line(cli(*args), "run.toml", "TOML", "YAML or JSON")
