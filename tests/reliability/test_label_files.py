"""Label files whose values np.array would change without a word (ninth sweep)."""

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
