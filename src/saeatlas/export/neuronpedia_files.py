"""The files of a Neuronpedia export's folder: their names, which of them are an
export's (and an export by saeatlas, which the next one may replace), and reading the
batches back."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .._validation import check_path_argument
from ..errors import ConfigError

SETTINGS = "run_settings.json"
SKIPPED = "skipped_indexes.json"
#: The name of a batch file, with its number.
BATCH_FILE = re.compile(r"batch-(\d+)\.json")


def check_not_theirs(out: Path) -> None:
    """Refuse batch files at ``out`` that saeatlas did not write (SAEDashboard's runner
    writes the same names): they were replaced, as an earlier export is, without a word.
    An earlier export's ``run_settings.json`` says it is saeatlas's (``exported_by``)."""
    if not out.is_dir():
        return
    files = [
        p.name
        for p in out.iterdir()
        if p.name in (SETTINGS, SKIPPED) or BATCH_FILE.fullmatch(p.name)
    ]
    try:
        by = json.loads((out / SETTINGS).read_text()).get("exported_by")
    except (OSError, ValueError, AttributeError):  # none, not JSON, or no JSON object
        by = None
    if files and not (isinstance(by, str) and by.startswith("saeatlas")):
        raise ConfigError(
            f"'{out}' holds Neuronpedia files that saeatlas did not write ({sorted(files)[:3]}; "
            f"no `exported_by` of saeatlas in its {SETTINGS}), which the export would "
            "replace; choose another --out."
        )


def read_batches(out: str | Path) -> list[dict[str, Any]]:
    """The ``batch-<i>.json`` files under ``out``, in order."""
    check_path_argument("out", out)  # a number ended in pathlib's TypeError
    if not Path(out).is_dir():  # a file, or a path mistyped, read as an export of no batch
        raise ConfigError(
            f"'{out}' is not a directory; give the folder that `export-neuronpedia --out` wrote."
        )
    # `batch-old.json` beside them ended in int()'s ValueError
    numbered = [(BATCH_FILE.fullmatch(p.name), p) for p in Path(out).iterdir()]
    files = sorted((int(m.group(1)), p) for m, p in numbered if m is not None and p.is_file())
    return [json.loads(p.read_text()) for _, p in files]
