import copy
import os
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from saeatlas.capture import CaptureConfig, capture, capture_activations
from saeatlas.errors import (
    ConfigError,
    InputsError,
    ModelError,
    NonFiniteError,
    ShapeError,
    StoreError,
)

QUIET = {"progress": False}


def no_hooks_left(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_mlp_values_rows_and_labels(tmp_path, mlp, mlp_inputs):
    labels = np.arange(50) % 3
    store = capture_activations(
        mlp,
        mlp_inputs,
        ["act1", "fc2"],
        tmp_path / "s",
        CaptureConfig(batch_size=16),
        labels=labels,
        **QUIET,
    )
    with torch.no_grad():
        h1 = mlp.act1(mlp.fc1(mlp_inputs))
        z2 = mlp.fc2(h1)
    assert [(l.name, l.start, l.stop, l.layout) for l in store.layers] == [
        ("act1", 0, 16, "sample"),
        ("fc2", 16, 28, "sample"),
    ]
    torch.testing.assert_close(store.read(), torch.cat([h1, z2], 1), rtol=0, atol=1e-6)
    rows = store.rows().to_pydict()
    assert rows["sample"] == list(range(50)) and rows["label"] == labels.tolist()
    assert no_hooks_left(mlp)


def test_input_suffix_and_tuple_outputs(tmp_path):
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 5)

        def forward(self, x):
            return self.lin(x), self.lin(x) * 2

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()
            self.out = nn.Linear(5, 1)

        def forward(self, x):
            a, b = self.pair(x)
            return self.out(a + b)

    torch.manual_seed(0)
    net, x = Net(), torch.randn(7, 3)
    store = capture_activations(net, x, ["pair:input", "pair"], tmp_path / "a", **QUIET)
    got = store.read()
    assert [l.name for l in store.layers] == ["pair", "pair:input"]  # natural order
    torch.testing.assert_close(got[:, :5], net.pair.lin(x).detach())  # first tensor of the tuple
    torch.testing.assert_close(got[:, 5:], x)
    store = capture_activations(
        net, x, ["pair"], tmp_path / "b", CaptureConfig(output_index=1), **QUIET
    )
    torch.testing.assert_close(store.read(), 2 * net.pair.lin(x).detach())
    with pytest.raises(ShapeError, match="no tensor at `output_index` 5"):
        capture_activations(
            net, x, ["pair"], tmp_path / "c", CaptureConfig(output_index=5), **QUIET
        )
    # on layers that all give a plain tensor it picks nothing: refused (a warning was
    # missed, and the store held the plain tensor), and nothing is left behind
    with pytest.raises(ConfigError, match=r"`output_index`\) 1 picks nothing.*\['out'\]"):
        capture_activations(net, x, ["out"], tmp_path / "d", CaptureConfig(output_index=1), **QUIET)
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_cnn_positions_and_mean(tmp_path, cnn):
    x = torch.randn(5, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        conv = cnn.act(cnn.conv(x))
    store = capture_activations(cnn, x, ["act"], tmp_path / "p", **QUIET)
    assert store.n_rows == 5 * 36 and store.n_units == 4
    expected = conv.permute(0, 2, 3, 1).reshape(-1, 4)
    torch.testing.assert_close(store.read(), expected)
    rows = store.rows().to_pydict()
    assert rows["position"][:37] == list(range(36)) + [0] and rows["sample"][36] == 1
    store = capture_activations(
        cnn, x, ["act", "head"], tmp_path / "m", CaptureConfig(spatial="mean"), **QUIET
    )
    torch.testing.assert_close(store.read()[:, :4], conv.mean(dim=(2, 3)))
    assert store.layers[0].layout == "pooled" and store.n_rows == 5


def test_layers_with_different_row_counts_are_an_error(tmp_path, cnn):
    x = torch.randn(3, 1, 6, 6)
    with pytest.raises(
        ShapeError, match=r"'act': 108 rows \(position\).*'head': 3 rows.*--spatial mean"
    ):
        capture_activations(cnn, x, ["act", "head"], tmp_path / "s", **QUIET)


def test_a_layer_that_changes_width_between_batches_is_an_error(tmp_path):
    class Trade(nn.Module):
        """Two layers that trade two units after the first batch: the total stays 10."""

        def __init__(self):
            super().__init__()
            self.lin, self.a, self.b = nn.Linear(3, 10), nn.Identity(), nn.Identity()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            h, k = self.lin(x), 4 if self.calls == 1 else 6
            return self.a(h[:, :k]), self.b(h[:, k:])

    with pytest.raises(ShapeError, match=r"'a' gives 6 units per row in input batch 1.*gave 4"):
        capture_activations(
            Trade(),
            torch.randn(8, 3),
            ["a", "b"],
            tmp_path / "s",
            CaptureConfig(batch_size=4),
            **QUIET,
        )
    assert not (tmp_path / "s").exists()


def test_hooks_removed_and_mode_restored_when_forward_fails(tmp_path, mlp):
    mlp.train()
    # one line naming the batch and the model's own error (a RuntimeError too)
    with pytest.raises(ModelError, match=r"input batch 0 \(samples 0-3\): RuntimeError: mat1"):
        capture_activations(
            mlp, torch.randn(4, 5), ["act1"], tmp_path / "s", **QUIET
        )  # wrong width
    assert no_hooks_left(mlp) and mlp.training


def test_failed_capture_removes_only_the_empty_directories_it_made(tmp_path, mlp):
    wrong_width = torch.randn(4, 5)
    with pytest.raises(ModelError):
        capture_activations(mlp, wrong_width, ["act1"], tmp_path / "new" / "s", **QUIET)
    assert not (tmp_path / "new").exists()
    (tmp_path / "there").mkdir()
    with pytest.raises(ModelError):
        capture_activations(mlp, wrong_width, ["act1"], tmp_path / "there", **QUIET)
    assert (tmp_path / "there").is_dir()


def test_outputs_that_are_not_batch_first_are_an_error(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(3, 4, num_layers=2, batch_first=True)

        def forward(self, x):
            return self.gru(x)[0]

    x = torch.randn(6, 5, 3)
    store = capture_activations(Net(), x, ["gru"], tmp_path / "a", **QUIET)
    assert store.n_rows == 30  # the outputs [batch, seq, d]: a row per token
    # the final state [layers, batch, d] would have been 2 "samples" of 6 tokens
    with pytest.raises(ShapeError, match=r"'gru' gives shape \[2, 6, 4\].*batch has 6 samples"):
        capture_activations(
            Net(), x, ["gru"], tmp_path / "b", CaptureConfig(output_index=1), **QUIET
        )


def test_seq_first_outputs_as_long_as_the_batch_are_an_error(tmp_path):
    """[seq, batch, d] with seq == batch has the shape of [batch, seq, d]: found by
    running the first batch again without its last sample."""

    class Net(nn.Module):
        def __init__(self, batch_first):
            super().__init__()
            self.batch_first = batch_first
            self.lstm = nn.LSTM(3, 4, batch_first=batch_first)

        def forward(self, x):
            return self.lstm(x if self.batch_first else x.transpose(0, 1))[0]

    torch.manual_seed(0)
    x = torch.randn(6, 6, 3)  # 6 samples of 6 tokens, one batch
    with pytest.raises(ShapeError, match=r"'lstm' gives shape \[6, 6, 4\].*\[6, 5, 4\] for 5"):
        capture_activations(Net(False), x, ["lstm"], tmp_path / "a", **QUIET)
    assert not (tmp_path / "a" / "manifest.json").exists()
    net = Net(True)
    store = capture_activations(net, x, ["lstm"], tmp_path / "b", **QUIET)
    with torch.no_grad():
        torch.testing.assert_close(store.read(), net(x).reshape(36, 4))


def test_inputs_are_given_in_the_models_dtype(tmp_path, mlp):
    x = np.random.default_rng(0).normal(size=(10, 8))  # NumPy's float64
    double = copy.deepcopy(mlp).double()
    store = capture_activations(double, x, ["fc1"], tmp_path / "d", **QUIET)
    with torch.no_grad():  # exact: the float64 inputs were not rounded to float32 on the way
        assert torch.equal(store.read().double(), double.fc1(torch.from_numpy(x)).float().double())
    store = capture_activations(mlp, x.astype(np.float16), ["fc1"], tmp_path / "h", **QUIET)
    assert store.n_rows == 10


def test_early_stop_skips_later_modules(tmp_path, mlp, mlp_inputs):
    # the first batch runs whole (a recorded module that runs again later in the pass
    # is found there); every later batch stops at the last recorded module
    calls = []
    mlp.head.register_forward_hook(lambda *a: calls.append(1))
    capture_activations(
        mlp, mlp_inputs, ["act1"], tmp_path / "a", CaptureConfig(batch_size=10), **QUIET
    )
    assert len(calls) == 1
    capture_activations(
        mlp,
        mlp_inputs,
        ["act1"],
        tmp_path / "b",
        CaptureConfig(batch_size=10, early_stop=False),
        **QUIET,
    )
    assert len(calls) == 1 + 5


def test_a_model_that_fails_after_the_recorded_modules_still_captures_with_early_stop(
    tmp_path,
):
    class FailsLate(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            self.lin(x)
            raise RuntimeError("no head here")

    x = torch.randn(6, 4)
    model = FailsLate()
    store = capture_activations(model, x, ["lin"], tmp_path / "s", **QUIET)
    torch.testing.assert_close(store.read(), model.lin(x).detach())
    with pytest.raises(ModelError, match="no head here"):
        capture_activations(
            model, x, ["lin"], tmp_path / "t", CaptureConfig(early_stop=False), **QUIET
        )


def test_a_module_that_runs_twice_in_one_pass_is_an_error(tmp_path):
    """Without early stop its last call was kept, with it its first: two stores from
    one command line. It is an error whenever the second call is seen."""

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.out(self.lin(self.lin(x)))

    x = torch.randn(5, 4)
    for layers, config in (
        (["lin"], CaptureConfig(early_stop=False)),
        (["lin", "out"], CaptureConfig()),  # the second call comes before 'out' ends the pass
        (["lin"], CaptureConfig()),  # early stop would end the pass before the second call
    ):
        with pytest.raises(ShapeError, match="'lin' ran more than once in one forward pass"):
            capture_activations(Twice(), x, layers, tmp_path / "s", config, **QUIET)


def test_eval_mode_and_no_grad(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 64), nn.Dropout(0.5))
    net.train()
    x = torch.randn(10, 4)
    store = capture_activations(net, x, ["1"], tmp_path / "s", **QUIET)
    torch.testing.assert_close(store.read(), net[0](x).detach())  # dropout was off
    assert net.training


def test_nonfinite_error_names_layer_row_and_count(tmp_path, mlp):
    x = torch.randn(20, 8)
    x[13, 0] = float("nan")
    with pytest.raises(
        NonFiniteError, match=r"Layer 'act2' has 12 NaN/Inf values in 1 rows.*row 13 \(sample 13"
    ):
        capture_activations(
            mlp, x, ["fc1", "act2"], tmp_path / "s", CaptureConfig(batch_size=8), **QUIET
        )
    store = capture_activations(
        mlp, x, ["fc1"], tmp_path / "k", CaptureConfig(batch_size=8, on_nonfinite="skip"), **QUIET
    )
    assert store.n_rows == 19 and store.manifest.n_nonfinite_rows_skipped == 1
    assert 13 not in store.rows().column("sample").to_pylist()
    assert torch.isfinite(store.read()).all()


def test_values_the_store_dtype_cannot_hold_are_nonfinite(tmp_path):
    """float16 ends at 65504 (float32 at 3.4e38, for a float64 model): larger values
    would be stored as Inf, and the store's statistics would be Inf."""
    x = torch.ones(6, 3)
    x[4, 1] = 1e5
    with pytest.raises(NonFiniteError, match=r"1 values that float16 cannot hold.*row 4"):
        capture_activations(
            nn.Sequential(nn.Identity()), x, ["0"], tmp_path / "a",
            CaptureConfig(store_dtype="float16"), **QUIET,
        )  # fmt: skip
    assert not (tmp_path / "a").exists()
    store = capture_activations(
        nn.Sequential(nn.Identity()), x, ["0"], tmp_path / "b",
        CaptureConfig(store_dtype="float16", on_nonfinite="skip"), **QUIET,
    )  # fmt: skip
    assert store.n_rows == 5 and np.isfinite(store.mean).all()
    with pytest.raises(NonFiniteError, match="float32 cannot hold"):
        capture_activations(
            nn.Sequential(nn.Identity()), x.double() * 1e300, ["0"], tmp_path / "c", **QUIET
        )


def test_complex_outputs_are_an_error(tmp_path):
    class Complex(nn.Module):
        def forward(self, x):
            return torch.complex(x, x)

    with pytest.raises(ShapeError, match="complex values"):
        capture_activations(
            nn.Sequential(Complex()), torch.randn(4, 3), ["0"], tmp_path / "s", **QUIET
        )


class FailingAfter:
    """An iterable of batches that raises after ``n`` batches, like a killed process."""

    def __init__(self, data, batch, n):
        self.data, self.batch, self.n = data, batch, n

    def __iter__(self):
        for i, s in enumerate(range(0, len(self.data), self.batch)):
            if i == self.n:
                raise KeyboardInterrupt("simulated interruption")
            yield self.data[s : s + self.batch]


def test_interrupted_capture_resumes_to_the_same_store(tmp_path, mlp):
    x = torch.randn(97, 8, generator=torch.Generator().manual_seed(3))
    cfg = CaptureConfig(shard_rows=23)
    full = capture_activations(
        mlp, FailingAfter(x, 10, 99), ["act1", "act2"], tmp_path / "full", cfg, **QUIET
    )
    with pytest.raises(KeyboardInterrupt):
        capture_activations(
            mlp, FailingAfter(x, 10, 6), ["act1", "act2"], tmp_path / "part", cfg, **QUIET
        )
    assert (tmp_path / ".part.partial" / "progress.safetensors").exists()
    assert not (tmp_path / "part").exists()
    with pytest.raises(StoreError, match="interrupted capture.*--resume"):
        capture_activations(
            mlp, FailingAfter(x, 10, 99), ["act1", "act2"], tmp_path / "part", cfg, **QUIET
        )
    resumed = capture_activations(
        mlp, FailingAfter(x, 10, 99), ["act1", "act2"], tmp_path / "part", cfg, resume=True, **QUIET
    )
    assert [s.sha256 for s in resumed.manifest.shards] == [s.sha256 for s in full.manifest.shards]
    assert pq.read_table(tmp_path / "part" / "rows.parquet").equals(
        pq.read_table(tmp_path / "full" / "rows.parquet")
    )
    np.testing.assert_array_equal(resumed.mean, full.mean)
    np.testing.assert_array_equal(resumed.std, full.std)


def test_resume_with_other_settings_is_refused(tmp_path, mlp):
    x = torch.randn(60, 8)
    with pytest.raises(KeyboardInterrupt):
        capture_activations(
            mlp,
            FailingAfter(x, 10, 4),
            ["act1"],
            tmp_path / "s",
            CaptureConfig(shard_rows=15),
            **QUIET,
        )
    with pytest.raises(ConfigError, match="layers differ from those of the interrupted capture"):
        capture_activations(
            mlp,
            FailingAfter(x, 10, 99),
            ["act2"],
            tmp_path / "s",
            CaptureConfig(shard_rows=15),
            resume=True,
            **QUIET,
        )
    with pytest.raises(ConfigError, match="uses 15 rows per shard, this run asks for 16"):
        capture_activations(
            mlp,
            FailingAfter(x, 10, 99),
            ["act1"],
            tmp_path / "s",
            CaptureConfig(shard_rows=16),
            resume=True,
            **QUIET,
        )


def test_resume_with_a_model_changed_only_in_its_middle_is_refused(tmp_path):
    # A checkpoint fine-tuned away from the ends of its parameters (here one value of
    # a 20,000-value weight) is another model: a resume must not mix the two.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 2500), nn.ReLU())
    x, cfg = torch.randn(40, 8), CaptureConfig(shard_rows=10)
    with pytest.raises(KeyboardInterrupt):
        capture_activations(net, FailingAfter(x, 10, 2), ["1"], tmp_path / "s", cfg, **QUIET)
    with torch.no_grad():
        net[0].weight.view(-1)[10_001] += 0.5
    with pytest.raises(ConfigError, match="this run's model differ"):
        capture_activations(
            net, FailingAfter(x, 10, 99), ["1"], tmp_path / "s", cfg, resume=True, **QUIET
        )


@pytest.mark.parametrize("other", [nn.Tanh(), nn.LeakyReLU(0.2)])
def test_resume_with_a_model_of_other_modules_but_the_same_weights_is_refused(tmp_path, other):
    """A ReLU swapped for a Tanh (an edited model file) changes no weight: the resumed
    store held ReLU rows then Tanh rows, declared complete."""
    x, cfg = torch.randn(40, 8), CaptureConfig(shard_rows=10)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 6), nn.LeakyReLU(0.01))
    with pytest.raises(KeyboardInterrupt):
        capture_activations(net, FailingAfter(x, 10, 2), ["1"], tmp_path / "s", cfg, **QUIET)
    net[1] = other
    with pytest.raises(ConfigError, match="this run's model differ"):
        capture_activations(
            net, FailingAfter(x, 10, 99), ["1"], tmp_path / "s", cfg, resume=True, **QUIET
        )


def test_resume_with_inputs_that_end_sooner_is_refused(tmp_path, mlp):
    """An iterable of batches is known only as it runs: one that ends before the rows
    already stored would leave a store of the old rows, declared complete."""
    x = torch.randn(60, 8)
    config = CaptureConfig(shard_rows=15)
    with pytest.raises(KeyboardInterrupt):
        capture_activations(mlp, FailingAfter(x, 10, 4), ["act1"], tmp_path / "s", config, **QUIET)
    with pytest.raises(ConfigError, match="they end after 2 batches, but it had already stored"):
        capture_activations(
            mlp,
            FailingAfter(x[:20], 10, 99),
            ["act1"],
            tmp_path / "s",
            config,
            resume=True,
            **QUIET,
        )
    store = capture_activations(
        mlp, FailingAfter(x, 10, 99), ["act1"], tmp_path / "s", config, resume=True, **QUIET
    )
    assert store.n_rows == 60


def test_dataloader_pairs_give_labels(tmp_path, mlp, mlp_inputs):
    ds = torch.utils.data.TensorDataset(mlp_inputs, torch.arange(50) % 4)
    loader = torch.utils.data.DataLoader(ds, batch_size=16)
    store = capture_activations(mlp, loader, ["act2"], tmp_path / "s", **QUIET)
    assert store.rows().column("label").to_pylist() == (np.arange(50) % 4).tolist()


def test_capture_context_manager(mlp, mlp_inputs):
    with capture(mlp, ["fc*"]) as acts:
        mlp(mlp_inputs)
    assert sorted(acts) == ["fc1", "fc2"]
    torch.testing.assert_close(acts["fc1"], mlp.fc1(mlp_inputs).detach())
    assert no_hooks_left(mlp)


def test_bad_config_values():
    with pytest.raises(ConfigError, match="`spatial`.*'positions', 'mean'"):
        CaptureConfig(spatial="avg")
    with pytest.raises(ConfigError, match="`on_nonfinite`"):
        CaptureConfig(on_nonfinite="ignore")
    with pytest.raises(ConfigError, match="`store_dtype`"):
        CaptureConfig(store_dtype="int8")
    with pytest.raises(ConfigError, match="`batch_size`"):
        CaptureConfig(batch_size=0)


def test_model_dtype_and_store_dtype(tmp_path, mlp, mlp_inputs):
    cfg = CaptureConfig(dtype="bfloat16", store_dtype="bfloat16")
    store = capture_activations(mlp, mlp_inputs, ["fc1"], tmp_path / "s", cfg, **QUIET)
    assert store.dtype == "bfloat16" and next(mlp.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        expected = mlp.fc1(mlp_inputs.bfloat16())
    assert torch.equal(store.read(dtype=None), expected)


@pytest.mark.gpu
def test_capture_on_cuda_matches_cpu(tmp_path, mlp, mlp_inputs):
    cpu = capture_activations(mlp, mlp_inputs, ["act1", "act2"], tmp_path / "c", **QUIET)
    gpu = capture_activations(
        mlp, mlp_inputs, ["act1", "act2"], tmp_path / "g", CaptureConfig(device="cuda"), **QUIET
    )
    torch.testing.assert_close(gpu.read(), cpu.read(), atol=1e-5, rtol=1e-5)


def test_later_inplace_ops_do_not_change_recorded_rows(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(inplace=True), nn.Linear(16, 2))
    x = torch.randn(30, 4)
    store = capture_activations(
        net, x, ["0"], tmp_path / "s", CaptureConfig(early_stop=False), **QUIET
    )
    expected = net[0](x).detach()
    assert (expected < 0).any()  # ReLU(inplace=True) would have zeroed these
    torch.testing.assert_close(store.read(), expected)


def test_texts_with_a_tokenizer_that_has_no_pad_token(tmp_path):
    # GPT-2's and Llama's tokenizers have no pad token; padding rows are dropped anyway
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    texts = ["a b c d", "b", "c a"]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 0, "b": 1, "c": 2, "d": 3}, "d"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="d")
    assert tokenizer.pad_token is None

    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(4, 3)

        def forward(self, input_ids, attention_mask):
            return self.emb(input_ids)

    net = Embed()
    store = capture_activations(
        net,
        texts,
        ["emb"],
        tmp_path / "s",
        CaptureConfig(batch_size=3),
        tokenizer=tokenizer,
        **QUIET,
    )
    rows = store.rows().to_pydict()
    assert rows["token"] == ["a", "b", "c", "d", "b", "c", "a"] and store.n_rows == 7
    torch.testing.assert_close(store.read(), net.emb.weight[[0, 1, 2, 3, 1, 2, 0]].detach())


def test_texts_are_cut_to_the_models_positions_when_the_tokenizer_sets_no_limit(
    tmp_path, tiny_gpt2, caplog
):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 1, "b": 2, "u": 3}, "u"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="u")
    assert tokenizer.model_max_length > 100_000  # no limit of its own
    texts = ["a b " * 10, "b a"]  # 20 tokens: more than the model's 16 positions
    with (
        caplog.at_level("INFO", logger="saeatlas.capture"),
        pytest.warns(UserWarning, match="1 of 2 texts were longer than 16 tokens"),
    ):
        store = capture_activations(
            tiny_gpt2, texts, ["transformer.h.0"], tmp_path / "s", tokenizer=tokenizer, **QUIET
        )
    assert store.n_rows == 16 + 2 and store.manifest.provenance["max_length"] == 16
    assert "Texts are cut to 16 tokens, the model's" in caplog.text


class _Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 3)

    def forward(self, ids):
        return self.emb(ids)


def test_texts_cut_to_the_models_limit_are_counted_in_a_warning(
    tmp_path, tiny_gpt2, make_char_tokenizer
):
    """Texts longer than the model takes were cut without a word: their later tokens
    had no rows."""
    texts = ["abcdefghijklmnopqrstuvwxyz", "a dog", "abcdefghijklmnop", "abcdefghijklmnopq"]
    with pytest.warns(UserWarning, match=r"^2 of 4 texts were longer than 16 tokens"):
        store = capture_activations(
            tiny_gpt2,
            texts,
            ["transformer.h.0"],
            tmp_path / "s",
            tokenizer=make_char_tokenizer(),
            **QUIET,
        )
    assert store.n_rows == 16 + 5 + 16 + 16  # 16 positions: the 16-character text fits
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none cut, no warning
        capture_activations(
            tiny_gpt2,
            texts[1:3],
            ["transformer.h.0"],
            tmp_path / "t",
            tokenizer=make_char_tokenizer(),
            **QUIET,
        )


def test_max_length_cuts_token_ids(tmp_path):
    torch.manual_seed(0)
    net, ids = _Embed(), torch.randint(0, 5, (6, 10))
    store = capture_activations(
        net, ids, ["emb"], tmp_path / "s", CaptureConfig(batch_size=4, max_length=4), **QUIET
    )
    assert store.n_rows == 6 * 4 and store.manifest.provenance["max_length"] == 4
    torch.testing.assert_close(store.read(), net.emb.weight[ids[:, :4].reshape(-1)].detach())


def test_max_length_on_inputs_it_cannot_cut_is_refused_before_anything_is_written(
    tmp_path, mlp, mlp_inputs
):
    out = tmp_path / "s"
    kept = capture_activations(mlp, mlp_inputs, ["act1"], out, **QUIET).read()
    with pytest.raises(InputsError, match="--max-length .* cuts texts and arrays of integer"):
        capture_activations(
            mlp, mlp_inputs, ["act1"], out, CaptureConfig(max_length=4), overwrite=True, **QUIET
        )
    with pytest.raises(InputsError, match="an iterable of batches"):
        capture_activations(
            mlp,
            [mlp_inputs[:8]],
            ["act1"],
            out,
            CaptureConfig(max_length=4),
            overwrite=True,
            **QUIET,
        )
    from saeatlas.store import ActivationStore

    torch.testing.assert_close(ActivationStore.open(out).read(), kept)
