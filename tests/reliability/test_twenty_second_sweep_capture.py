"""Twenty-second hostile sweep, capture and the activation store: label files whose
labels' column is missing, and the capture's other inputs, resumes and store files."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize(
    "name, text, needles",
    [
        # a header of columns without `label`: "record 1 holds ['id', 'y'] where one field
        # is expected", which named neither the missing column nor the columns there are
        (
            "labels.csv",
            "id,y\n" + "\n".join(f"{i},{i % 3}" for i in range(300)),
            ["has no column `label`", "the columns 'id', 'y'", "name the labels' column"],
        ),
        (
            "labels.csv",
            "id,Label\n" + "\n".join(f"{i},{i % 3}" for i in range(300)),
            ["has no column `label`", "'id', 'Label'"],
        ),
        # objects without "label": "each line must be ... an object with a number or
        # string "label"", not saying which keys the lines have
        (
            "labels.jsonl",
            "\n".join(json.dumps({"y": i % 3, "id": i}) for i in range(300)),
            ['line 1 holds an object without "label" (its keys: \'y\', \'id\')'],
        ),
    ],
)
def test_a_label_file_without_the_label_column_names_the_columns(
    tmp_path, guarded, run_cli, name, text, needles
):
    cli, assert_one_line_error = run_cli
    (tmp_path / name).write_text(text)
    r = cli(
        "capture",
        "--model",
        guarded.model,
        "--inputs",
        guarded.inputs,
        "--layers",
        "1",
        "--labels",
        tmp_path / name,
        "--out",
        tmp_path / "store",
        "-q",
    )
    assert_one_line_error(r, *needles)
    assert not (tmp_path / "store").exists()


def test_texts_without_the_text_key_name_the_keys(tmp_path):
    from saeatlas.capture import load_inputs
    from saeatlas.errors import InputsError

    (tmp_path / "t.jsonl").write_text('{"body": "abc"}\n')
    with pytest.raises(InputsError, match=r"without \"text\" \(its keys: 'body'\)"):
        load_inputs(tmp_path / "t.jsonl")
