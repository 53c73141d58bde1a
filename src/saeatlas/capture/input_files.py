"""Inputs and labels read from files: ``.npy``, ``.safetensors``, ``.txt`` and ``.jsonl``
(what ``--inputs`` and ``--labels`` take); :mod:`.inputs` makes batches of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validation import check_path_argument, shown, strict_json
from ..errors import InputsError
from ..store.npy import load_npy
from .labels import check_exact_floats


def load_inputs(path: str | Path) -> np.ndarray | list[str]:
    """Read inputs from a file: ``.npy`` or ``.safetensors`` arrays, or text (one per line).

    A ``.safetensors`` file holds one tensor (any other beside it is refused). A
    ``.jsonl`` file holds one JSON string (or ``{"text": ...}``) per line.
    """
    path = existing_file(path, "Inputs")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _load_npy(path)
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise InputsError(f"Cannot read '{path}' as safetensors: {e}") from e
        if not tensors:
            raise InputsError(f"'{path}' holds no tensors; save the inputs as 'inputs'.")
        if len(tensors) != 1:
            # 'inputs' beside others: an attention mask was not applied (padding captured
            # as rows) and labels not stored, without a word
            others = sorted(k for k in tensors if k != "inputs")
            why = (
                f"only 'inputs' is read, and {others[:5]} would be dropped without a word (an "
                "attention mask not applied, labels not stored)"
                if "inputs" in tensors
                else "name the input tensor 'inputs'"
            )
            raise InputsError(
                f"'{path}' holds tensors {sorted(tensors)[:6]}; {why}. Save the inputs alone "
                "(labels go in a file of their own, --labels; texts given as a .txt file are "
                "padded and masked)."
            )
        t = tensors.get("inputs", next(iter(tensors.values())))
        try:
            # NumPy has no bfloat16 or float8; float32 holds their values exactly
            if t.is_floating_point() and t.dtype not in (torch.float16, torch.float64):
                t = t.float()
            return t.numpy()
        except (TypeError, RuntimeError) as e:  # packed float4: torch has no conversion
            raise InputsError(
                f"'{path}' holds a tensor of dtype {t.dtype}, which cannot be read as an "
                "array; save it as float32, integer token ids or bool."
            ) from e
    if suffix in (".txt", ".text", ""):
        texts = [t for t in _read_lines(path) if t.strip()]
        if not texts:
            raise InputsError(f"'{path}' holds no non-empty lines of text.")
        return texts
    if suffix == ".jsonl":
        return _jsonl_values(
            path, "text", (str,), "string", '{"text": "Hello"}', blank="text", drop=".txt"
        )
    raise InputsError(
        f"Unsupported inputs file '{path}'; use .npy, .safetensors, .txt (one text per line) "
        "or .jsonl."
    )


def _jsonl_values(
    path: Path,
    key: str,
    kinds: tuple[type, ...],
    what: str,
    example: str,
    blank: str | None = None,
    drop: str = "",
) -> list[Any]:
    """One value per non-empty line of the ``.jsonl`` file ``path``: the line's JSON
    value, or its object's ``key``, which must be one of ``kinds`` (named ``what``).
    With ``blank`` (what the values are), an empty or blank string is refused: a text
    of no tokens gave its sample no rows without a word (``drop``: the file kind whose
    blank lines are skipped instead)."""
    values = []
    for i, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        try:  # a key given twice was read last-wins, 5000 digits or [[[...]]] in a traceback
            obj = strict_json(line, path.name)
        except ValueError as e:
            raise InputsError(f"'{path}' line {i} is not JSON: {e}.") from None
        value = obj.get(key) if isinstance(obj, dict) else obj
        if isinstance(obj, dict) and key not in obj:  # a record without the key's column
            raise InputsError(
                f"'{path}' line {i} holds an object without \"{key}\" (its keys: "
                f"{', '.join(map(repr, list(obj)[:20])) or 'none'}); give every line the "
                f'key "{key}", or one JSON {what} per line.'
            )
        if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
            raise InputsError(
                f"'{path}' line {i} holds {line.strip()[:60]!r}; each line must be a JSON "
                f'{what} or an object with a {what} "{key}", e.g. {example}.'
            )
        if blank is not None and isinstance(value, str) and not value.strip():
            raise InputsError(
                f"'{path}' line {i} holds an empty {blank} ({value!r}), which has no tokens "
                f"to capture; drop that line (a {drop} file's blank lines are skipped) or "
                "give it text."
            )
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:  # JSON lets "\ud800" stand alone; Unicode does not
                raise InputsError(
                    f"'{path}' line {i} holds {value[e.start]!r}, half of a surrogate pair, "
                    "which is no character (no tokenizer or Parquet file takes it); fix or "
                    "drop that escape."
                ) from None
        values.append(value)
    if not values:
        raise InputsError(f"'{path}' holds no {key}s.")
    return values


def check_label_count(inputs: str | Path, data: Any, labels: str | Path, values: Any) -> None:
    """Refuse ``values``, the labels read from the file ``labels``, when they are not one
    per text of the text file ``inputs`` (``data``) because that file has blank lines, which
    are skipped: "Labels have shape [6] for 5 input samples" did not say why a file of six
    lines gave five texts. Other counts are refused where the labels are used."""
    path = Path(inputs)
    if not isinstance(data, list) or len(values) == len(data):
        return
    lines = _read_lines(path)
    lines = lines[:-1] if lines and not lines[-1] else lines  # the file's last line end
    blank = sum(not line.strip() for line in lines)
    if blank:
        raise InputsError(
            f"'{labels}' holds {len(values)} labels, but '{path}' holds {len(data)} texts: "
            f"its {len(lines)} lines less {blank} blank one(s), which are skipped (a blank "
            "line has no text to capture). Give one label per line that holds text."
        )


def given_labels(inputs: str | Path, data: Any, labels: str | Path | None) -> np.ndarray | None:
    """The labels of the inputs file ``inputs`` (read as ``data``): those of the file
    ``labels`` (:func:`check_label_count`), or without one, the ``"label"`` of each record
    of a ``.jsonl`` file of ``{"text", "label"}`` records, which were dropped without a
    word (a record without one is refused, naming its line)."""
    if labels:
        values = load_labels(labels)
        check_label_count(inputs, data, labels, values)
        return values
    path = Path(inputs)
    if path.suffix.lower() != ".jsonl":
        return None
    lines = [(i, ln) for i, ln in enumerate(_read_lines(path), 1) if ln.strip()]
    records = [(i, strict_json(ln, path.name)) for i, ln in lines]  # read by load_inputs
    if not any(isinstance(r, dict) and "label" in r for _, r in records):
        return None
    bare = next((i for i, r in records if not isinstance(r, dict)), None)
    if bare is not None:  # its text was read as its label
        raise InputsError(
            f"'{path}' line {bare} holds a bare text, but other lines hold records with a "
            '"label"; give every line as {"text": ..., "label": ...}.'
        )
    return load_labels(path)


#: What ``--labels`` reads as text, one label per line.
TEXT_LABELS = (".txt", ".text", "")


def load_labels(path: str | Path) -> np.ndarray:
    """One label per sample, from a ``.npy`` array, a ``.json`` array of numbers or
    strings, a ``.jsonl`` file (one JSON number or string, or ``{"label": ...}``, per
    line), a ``.csv`` file (:func:`_csv_labels`) or a text file (:data:`TEXT_LABELS`:
    one label per line)."""
    path = existing_file(path, "Labels")
    suffix = path.suffix.lower()
    if suffix == ".npy":  # as for --inputs: 'LABELS.NPY' is no text file
        arr = _load_npy(path)
    elif suffix == ".jsonl":  # read as text, '"cat"' kept its quotes
        labels = _jsonl_values(path, "label", (int, float, str), "number or string", "3")
        _check_one_kind(path, labels)
        arr = np.array(labels)
    elif suffix == ".json":  # read as text: a list on one line was one label, and a
        arr = np.array(_json_labels(path))  # list over lines labels such as '3,' and '['
    elif suffix == ".csv":  # read as text, '"a, b"' kept its quotes
        arr = np.array(_csv_labels(path))
    elif suffix in TEXT_LABELS:
        arr = np.array([ln.strip() for ln in _read_lines(path) if ln.strip()])
    else:  # a .parquet or .pt was read as lines of text
        raise InputsError(
            f"Unsupported labels file '{path}'; use .npy, .json (a list), .jsonl, .csv or "
            ".txt (one label per line)."
        )
    if arr.ndim != 1:
        raise InputsError(
            f"Labels in '{path}' have shape {arr.shape}; expected one label per sample."
        )
    return arr


def _csv_labels(path: Path) -> list[str]:
    """The labels of a CSV file (RFC 4180): one per record, or the column whose first
    record is ``label`` (a header); a field in double quotes may hold commas, doubled
    quotes and line ends. Empty records are skipped, as a text file's blank lines are."""
    import csv
    import io

    text = "\n".join(_read_lines(path))
    try:
        records = [r for r in csv.reader(io.StringIO(text, newline=""), strict=True) if r]
    except csv.Error as e:
        raise InputsError(
            f"'{path}' is not CSV ({e}); put a label holding a comma, a quote or a line end "
            'in double quotes, with its quotes doubled ("say ""hi"", twice").'
        ) from e
    column = records[0].index("label") if records and "label" in records[0] else None
    header = column is not None
    if not header and records and len(records[0]) > 1:  # a header without `label`
        raise InputsError(
            f"'{path}' has no column `label`: its first line holds the columns "
            f"{', '.join(map(repr, records[0][:20]))}; name the labels' column `label` in "
            "that line, or give one label per line."
        )
    for i, record in enumerate(records[header:], 1 + header):
        if column is None and len(record) != 1 or column is not None and column >= len(record):
            want = "one field" if column is None else f"a field in column {column + 1}, `label`"
            raise InputsError(
                f"'{path}' record {i} holds {record[:4]} where {want} is expected; give one "
                "label per line (in double quotes when it holds a comma), or a first line "
                "naming the column `label`."
            )
    return [r[column or 0] for r in records[header:]]


def _json_labels(path: Path) -> list[Any]:
    """The labels of a ``.json`` file: one JSON list of numbers or strings."""
    try:
        values = strict_json("\n".join(_read_lines(path)), path.name)
    except ValueError as e:
        raise InputsError(f"'{path}' is not JSON ({e}); give one list of labels.") from None
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in values
    ):
        raise InputsError(
            f"'{path}' must hold one JSON list of labels, numbers or strings (e.g. "
            f"[0, 1, 1]), got {shown(values)}."
        )
    if not values:
        raise InputsError(f"'{path}' holds no labels.")
    _check_one_kind(path, values)
    return values


def _check_one_kind(path: Path, labels: list[Any]) -> None:
    """Refuse labels that mix numbers and strings: ``np.array`` would make every one a
    string, so that ``1`` and ``"1"`` became one label."""
    check_exact_floats(labels, f"The labels of '{path}'")
    kinds = [isinstance(v, str) for v in labels]
    if any(kinds) and not all(kinds):
        other = kinds.index(not kinds[0]) + 1
        what = ("a number", "a string") if kinds[0] else ("a string", "a number")
        raise InputsError(
            f"'{path}': label {other} is {what[0]} and label 1 {what[1]}; give labels that "
            'are all numbers or all strings (1 and "1" would become one label).'
        )


def existing_file(
    path: str | Path, what: str, fix: str = "", error: type[Exception] = InputsError
) -> Path:
    """``path`` as a :class:`Path` of a regular file, or ``error`` naming it as the ``what``
    file and how it is not one (``fix``: what to give instead)."""
    check_path_argument("path", path)  # None or a number ended in pathlib's TypeError
    path, then = Path(path), f"; {fix}" if fix else ""
    if path.is_dir():
        raise error(f"{what} file '{path}' is a directory; {fix or 'give a file'}.")
    if path.exists() and not path.is_file():  # reading a named pipe would wait for a writer
        # a config as `<(...)` was told it "does not exist"
        raise error(f"{what} file '{path}' is not a regular file (a pipe or a device){then}.")
    if not path.is_file():
        from ..store.atomic import resolve

        resolve(path)  # a loop of symbolic links is named, not reported missing
        raise error(f"{what} file '{path}' does not exist{then}.")
    return path


def _load_npy(path: Path) -> np.ndarray:
    try:
        return load_npy(path)
    except (ValueError, EOFError) as e:  # numpy: EOFError for an empty file
        raise InputsError(
            f"Cannot read '{path}' as a .npy array (pickled arrays are refused): "
            f"{e}. Save a numeric array with `np.save`."
        ) from e


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, split at line ends only (``\\n``, ``\\r\\n``,
    ``\\r``): ``str.splitlines`` also splits at form feeds, U+0085 and U+2028, which
    may sit inside one text (and inside a JSON string)."""
    try:
        return path.read_text(encoding="utf-8-sig").split("\n")  # a BOM is no text
    except UnicodeDecodeError as e:
        raise InputsError(
            f"'{path}' is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8, or "
            "give arrays as .npy or .safetensors."
        ) from e
