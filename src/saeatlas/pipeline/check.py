"""``saeatlas run --check``: everything a run would refuse later, found before it starts.

The config's own validation catches bad values; what depends on the model and the
inputs is found by a dry run: the model and inputs are loaded, the first batch
is captured into a temporary store, and the layers, widths and sparsity values
the later stages will use are checked against it.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .._coordinator import Coordinator, run_ranks
from .._world import is_main_process
from ..capture import capture_activations
from ..capture.distributed import count_batches
from ..capture.inputs import known_length
from ..capture.labels import check_stored_labels
from ..store.lock import check_writable
from .config import RunConfig
from .fit import check_store_fits
from .outputs import run_dir_path
from .run import check_run_arguments
from .run_dir import check_run_dir
from .source import load_source
from .stages import check_ablation_source


def _first_batch(inputs: object, n: int) -> object:
    if isinstance(inputs, (torch.Tensor, np.ndarray, list, tuple)):
        return inputs[:n]
    if isinstance(inputs, (str, bytes, Mapping)) or not isinstance(inputs, Iterable):
        # refused by the capture as the run refuses it: None ended in a TypeError, and a
        # path or a dict was read for its characters or keys, "texts" with no tokenizer
        return inputs
    return list(itertools.islice(iter(inputs), 1))  # an iterable of batches


def _capture_rows(cfg: RunConfig, inputs: object, first: object, first_rows: int) -> int | None:
    """The rows the whole capture of ``inputs`` gives, from the ``first_rows`` its first
    batch ``first`` gave: arrays give as many rows per sample (one, or one per position);
    texts (padding dropped) and iterables of batches are not known before they are read,
    nor is what `--on-nonfinite skip` leaves out (None)."""
    n, n_first = known_length(inputs), known_length(first)
    if not isinstance(inputs, (torch.Tensor, np.ndarray)) or cfg.capture.on_nonfinite != "error":
        return None
    return None if n is None or not n_first else first_rows // n_first * n


def check_run(
    cfg: RunConfig,
    out: str | Path | None = None,
    timeout_s: float = 1800.0,
    overwrite: bool = False,
) -> str:
    """Dry-run ``cfg`` on its first input batch; raise :class:`ConfigError` (or the
    capture's own error) for what would fail later, the run directory ``out`` (default:
    the config's ``out``) included: what the run refuses there before its first stage,
    outputs of other settings too unless ``overwrite``. Returns a one-line summary.
    ``timeout_s``: as the run's, seconds a ``torchrun`` rank waits for the others (`run
    --check --timeout`)."""
    check_run_arguments(cfg, out, "cfg", overwrite=overwrite)  # `cfg` a path: an AttributeError
    out = run_dir_path(out) if out is not None else cfg.out
    if out is not None:  # a file, an unwritable folder, a store: the run stops there
        check_writable(out, holds_outputs=True)
        check_run_dir(cfg, Path(out), overwrite)
    src = load_source(cfg)
    first = _first_batch(src.inputs, cfg.capture.batch_size)
    # every label, not the first batch's: 299 labels of 300 inputs were called valid
    check_stored_labels(src.labels, known_length(src.inputs))
    labels = None if src.labels is None else src.labels[: cfg.capture.batch_size]
    if cfg.ablation.enabled:
        check_ablation_source(cfg, src)
    made: list[Path] = []

    def dry_run(coord: Coordinator) -> str:
        if coord.distributed:  # as the capture shares them out: a generator has no length
            count_batches(src.inputs, cfg.capture.batch_size)
        # under torchrun every rank captures its share into one folder, rank 0's (each
        # rank's own temporary folder was refused as "no partial directory")
        made.append(Path(coord.from_main(lambda: tempfile.mkdtemp(prefix="saeatlas-check-"))))
        store = capture_activations(
            src.model,
            first,
            list(cfg.layers),
            made[0] / "store",
            replace(cfg.capture, shard_rows=None),
            tokenizer=src.tokenizer,
            labels=labels,
            progress=False,
        )
        return check_store_fits(cfg, store, _capture_rows(cfg, src.inputs, first, store.n_rows))

    try:  # the ranks' last meeting comes before rank 0 removes the folder
        return run_ranks("check", cfg.capture.device, timeout_s, dry_run)
    finally:
        if made and is_main_process():
            shutil.rmtree(made[0], ignore_errors=True)
