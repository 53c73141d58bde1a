"""The twenty-fourth hostile sweep's cases on other models and other data (Hugging Face
architectures built at random from tiny configs, plain torch modules of unusual structure,
and odd inputs): each was refused wrongly, ended in a traceback or a misleading message, or
gave a result other than it said before its fix."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

#: Plain torch models of unusual structure, as a model file the CLI can load.
ODD_MODELS = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Score(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(10, 1)

        def forward(self, x):
            return self.fc(x).squeeze(-1)  # [batch]: one value per sample


    class OneD(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.score, self.head = nn.Linear(6, 10), Score(), nn.Linear(11, 3)

        def forward(self, x):
            h = torch.relu(self.fc(x))
            return self.head(torch.cat([h, self.score(h)[:, None]], 1))


    class Listed(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(6, 10), nn.Linear(10, 3)])

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return x


    def one_d():
        torch.manual_seed(0)
        return OneD()


    def listed():
        torch.manual_seed(0)
        return Listed()
    """
)


@pytest.fixture
def odd(tmp_path):
    """The model file :data:`ODD_MODELS`, inputs ``x.npy`` (48 x 6) and labels ``y.npy``
    (3 classes) in ``tmp_path``; ``odd(name)`` is the SPEC of factory ``name``."""
    (tmp_path / "odd.py").write_text(ODD_MODELS)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(48, 6)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.arange(48) % 3)
    return lambda name: f"{tmp_path / 'odd.py'}:{name}"


def _small(config: type, **settings: object) -> object:
    """A Hugging Face ``config`` of one layer of width 16 (2 heads, 32 wide MLP)."""
    shared = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    return config(**shared, **settings)


def _built(model: type, config: type, **settings: object) -> nn.Module:
    """A Hugging Face ``model`` built at random (seed 0) from a :func:`_small` ``config``
    (by default of 40 tokens and 16 positions)."""
    torch.manual_seed(0)
    settings = {"vocab_size": 40, "max_position_embeddings": 16, **settings}
    return model(_small(config, **settings)).eval()


def test_masked_language_models_of_their_own_output_kind_are_refused_for_next_token():
    """A masked LM whose output class is its own (Longformer's `LongformerMaskedLMOutput`,
    Luke's, Perceiver's) passed as a causal LM: `--loss next-token` read the logits at each
    position as the next token's prediction, and `evaluate --model` and the ablation gave a
    loss of another model, without a word (only `MaskedLMOutput` itself was known)."""
    from saeatlas.capture.inputs import InputBatch
    from saeatlas.errors import ShapeError
    from saeatlas.losses import per_sample_next_token

    window = dict(max_position_embeddings=20, attention_window=4, pad_token_id=1)
    lm = _built(transformers.LongformerForMaskedLM, transformers.LongformerConfig, **window)
    ids = torch.randint(3, 40, (2, 8))
    with torch.no_grad():
        output = lm(input_ids=ids)
    with pytest.raises(ShapeError, match=r"is a masked language model \(LongformerMaskedLM"):
        per_sample_next_token(output, InputBatch((), {"input_ids": ids}, 2))


@pytest.mark.parametrize(
    "output, needle",
    [
        ((torch.tensor(1.5), torch.zeros(4, 3)), "shapes [], [4, 3]; its first tensor"),
        (torch.zeros(4, 3, 8, 8), "shape [4, 3, 8, 8]. Give a classifier"),
    ],
    ids=["loss-then-logits", "segmentation"],
)
def test_cross_entropy_advises_next_token_only_for_sequence_logits(output, needle):
    """The cross-entropy of logits other than [batch, classes] advised `--loss
    next-token`, a causal LM's loss, for a segmentation model's [batch, classes, H, W]
    (SegFormer) and for a model returning `(loss, logits)` (told of shape [] alone)."""
    from saeatlas.capture.inputs import InputBatch
    from saeatlas.errors import ShapeError
    from saeatlas.losses import per_sample_cross_entropy

    batch = InputBatch((), {}, 4, labels=np.array([0, 1, 2, 1]))
    with pytest.raises(ShapeError) as e:
        per_sample_cross_entropy(output, batch)
    assert needle in str(e.value) and "next-token" not in str(e.value)


@pytest.mark.parametrize("output", [None, (None, "aux")], ids=["none", "tuple-of-none"])
def test_a_model_whose_forward_returns_no_tensor_is_named_so(output):
    """A model whose forward keeps its result as an attribute and returns None was told
    "Layer 'model output' gives a NoneType, not a tensor" by `evaluate --model` and the
    ablation: no layer of it was at fault."""
    from saeatlas.capture.inputs import InputBatch
    from saeatlas.errors import ShapeError
    from saeatlas.losses import per_sample_cross_entropy

    batch = InputBatch((), {}, 2, labels=np.array([0, 1]))
    with pytest.raises(ShapeError, match="the model's logits, but its forward returns") as e:
        per_sample_cross_entropy(output, batch)
    assert "Layer" not in str(e.value)


def test_a_layer_of_one_value_per_sample_is_ablated(odd, tmp_path, run_cli):
    """A layer giving [batch] (a score per sample) was captured as one unit, but the
    ablation read its last axis, the batch, as units: `analyze --model` refused the
    captured model as "has 64 units, but the atlas's store recorded 1 there ... not the
    one the store was captured from"."""
    from saeatlas.structure.causal.units import Ablator, layer_units

    cli, _ = run_cli
    spec = odd("one_d")
    r = cli(
        "capture",
        "--model",
        spec,
        "--inputs",
        tmp_path / "x.npy",
        "--layers",
        "fc",
        "score",
        "--out",
        tmp_path / "s",
        "-q",
    )
    assert r.exit_code == 0, r.output
    from saeatlas.store import ActivationStore

    layers = ActivationStore.open(tmp_path / "s").layers
    assert [l.n_units for l in layers] == [10, 1]
    assert layer_units(torch.zeros(5), layers[1].layout) == 1
    from saeatlas.capture import load_model

    model = load_model(spec).model
    ablator = Ablator(model, layers, np.full(11, 7.0))
    seen = {}
    model.score.register_forward_hook(lambda m, a, o: seen.setdefault("score", o))
    try:
        ablator.set(np.array([10]))  # the score's one unit
        model(torch.zeros(5, 6))
    finally:
        ablator.remove()
    torch.testing.assert_close(seen["score"], torch.full((5,), 7.0))


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory):
    """A tiny GPT-2 (vocabulary 40) saved as a Hugging Face directory, token ids of it
    (``ids.npy``, 24 x 8), a store of its block 0 and an SAE of that store."""
    from saeatlas.capture import capture_activations
    from saeatlas.train import TrainConfig, train_sae

    root = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=40, n_positions=16)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(root / "model")
    ids = np.random.default_rng(0).integers(0, 40, size=(24, 8))
    np.save(root / "ids.npy", ids)
    capture_activations(model, ids, ["transformer.h.0"], root / "store", progress=False)
    train_sae(
        root / "store",
        TrainConfig(d_sae=16, k=2, tokens=640, batch_size=32),
        root / "sae",
        progress=False,
    )
    return root


def test_token_ids_past_the_vocabulary_are_refused_by_evaluate_and_the_ablation(
    gpt2_run, tmp_path, run_cli
):
    """The capture refuses token ids past a Hugging Face model's vocabulary (a GPU's
    device-side assert), but `evaluate --model`, the ablation and `saeatlas layers` passed
    them to the model: "index out of range in self" on a CPU, and `analyze --model` said
    so only after the whole analysis (its check of the inputs ran the first input alone)."""
    cli, one_line = run_cli
    ids = np.load(gpt2_run / "ids.npy")
    ids[3, 2] = 45
    np.save(tmp_path / "oov.npy", ids)
    common = ("--sae", gpt2_run / "sae", "--acts", gpt2_run / "store", "--model")
    common += (gpt2_run / "model", "--inputs", tmp_path / "oov.npy", "--loss", "next-token")
    one_line(cli("evaluate", *common), "Token ids of inputs 0..23 run from 0 to 45", "40 entries")
    one_line(
        cli("analyze", *common, "--out", tmp_path / "atlas", "-q"),
        "Token ids of input 3 run",
        "40 entries",
    )
    assert not (tmp_path / "atlas").exists()
    ids[0, 1] = 99  # `saeatlas layers` runs the first inputs alone
    np.save(tmp_path / "oov0.npy", ids)
    one_line(
        cli("layers", gpt2_run / "model", "--inputs", tmp_path / "oov0.npy"),
        "Token ids of the example input run from 0 to 99",
    )
    ids[0, 1] = 0
    from saeatlas.errors import InputsError
    from saeatlas.losses import per_sample_next_token
    from saeatlas.store import ActivationStore
    from saeatlas.structure.causal.ablation import ablate_modules

    model = transformers.GPT2LMHeadModel.from_pretrained(gpt2_run / "model").eval()
    layers = ActivationStore.open(gpt2_run / "store").layers
    with pytest.raises(InputsError, match="Token ids of inputs 0..23 run from 0 to 45"):
        ablate_modules(
            model, ids, layers, np.zeros(16, int), mode="zero", loss_fn=per_sample_next_token
        )


def test_token_type_ids_past_the_model_s_types_are_named(tmp_path):
    """Dict batches whose `token_type_ids` go past BERT's `type_vocab_size` reached the
    model and ended in "index out of range in self" (a device-side assert on a GPU), a
    failure that named neither the key nor the model's number of types."""
    from saeatlas.capture import capture_activations
    from saeatlas.errors import InputsError

    model = _built(transformers.BertModel, transformers.BertConfig)
    types = torch.zeros(4, 6, dtype=torch.long)
    types[1, 3:] = 2  # a third segment: BERT has two
    batch = {"input_ids": torch.randint(0, 40, (4, 6)), "token_type_ids": types}
    with pytest.raises(InputsError, match=r"`token_type_ids` of .* run from 0 to 2, .* 2 token"):
        capture_activations(model, [batch], ["encoder.layer.0"], tmp_path / "s", progress=False)


def test_a_module_list_is_named_as_a_container_never_called(odd, tmp_path, run_cli):
    """`--layers blocks` of an `nn.ModuleList` was taken, then the capture said it "did not
    run during the forward pass" and to "choose modules that the model's forward uses",
    which it does (through the list's members); a glob that also picked the list (`**`)
    failed the same way (it now records the list's members alone)."""
    from saeatlas.store import ActivationStore

    cli, one_line = run_cli
    spec = odd("listed")
    args = ("capture", "--model", spec, "--inputs", tmp_path / "x.npy", "-q", "--out")
    one_line(
        cli(*args, tmp_path / "s", "--layers", "blocks"),
        "'blocks', a ModuleList: a container the model never calls",
        "'blocks.*' (or one of them, 'blocks.0')",
    )
    assert not (tmp_path / "s").exists()
    r = cli(*args, tmp_path / "s", "--layers", "**")
    assert r.exit_code == 0, r.output
    assert [l.name for l in ActivationStore.open(tmp_path / "s").layers] == ["blocks.0", "blocks.1"]


class _Latents(nn.Module):
    """A Perceiver's shape: token ids [batch, seq] read into 4 latents [batch, 4, 8]."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.latents = nn.Embedding(20, 8), nn.Parameter(torch.randn(4, 8))
        self.cross = nn.Identity()

    def forward(self, input_ids, attention_mask=None):
        keys = self.embed(input_ids)  # [batch, seq, 8]
        weights = torch.softmax(self.latents @ keys.transpose(1, 2), dim=-1)  # [batch, 4, seq]
        return self.cross(weights @ keys)


def test_a_layer_of_latents_is_not_blamed_on_the_attention_mask(tmp_path):
    """A layer whose positions are no tokens (a Perceiver's latents, [batch, 4, d]) given
    padded inputs was refused as "has shape (2, 4, 8) but the attention mask has shape
    (2, 6); expected [batch, seq] = [2, 4]", as if the mask were wrong."""
    from saeatlas.capture import capture_activations
    from saeatlas.errors import ShapeError

    torch.manual_seed(0)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    batch = {"input_ids": torch.randint(0, 20, (2, 6)), "attention_mask": mask}
    with pytest.raises(ShapeError, match="gives 4 positions per sample .* 6 tokens: its pos"):
        capture_activations(_Latents(), [batch], ["cross"], tmp_path / "s", progress=False)


def test_units_whose_correlation_view_cannot_fit_are_refused_before_the_work(
    guarded, tmp_path, run_cli, monkeypatch, forbid
):
    """`analyze` of an SAE of a very wide layer (20,000 units: six grams of 20,000 x
    20,000 float64) ended in "Out of memory ... Lower the sizes that grow with the data
    (--batch-size)", which changes nothing; it is now refused before the encoding, naming
    what the view needs (here on a machine made to look as small as 1 kB)."""
    import saeatlas.structure.inputs as inputs

    cli, one_line = run_cli
    monkeypatch.setattr(inputs, "memory_bytes", lambda device: 1000)
    forbid(inputs, "encode_store")
    one_line(
        cli("analyze", "--sae", guarded.sae, "--acts", guarded.store, "--out", tmp_path / "a"),
        "The units' correlation view of the SAE's 18 units needs about",
        "grams of 18 x 18 float64",
        "--seeds 1",
    )
    assert not (tmp_path / "a").exists()


def test_a_run_config_loads_a_classifier_checkpoint_with_its_head(tmp_path, run_cli):
    """A run config had no way to say `--model-class`: a Hugging Face classifier
    (SwinForImageClassification, ViTForImageClassification) loaded as its base model, so
    the run's ablation ended, after the capture, sweep, training and analysis, in "a model
    without its head ... loads it with --model-class checkpoint", a flag `run` has not.
    `model_class` is now a run config key, recorded in the capture's settings only when
    set (runs made before it keep their records)."""
    from saeatlas.pipeline import load_run_config
    from saeatlas.pipeline.record import stage_settings
    from saeatlas.pipeline.source import load_source

    cli, one_line = run_cli
    image = dict(image_size=8, patch_size=4, num_channels=3, num_labels=3)
    vit = _built(transformers.ViTForImageClassification, transformers.ViTConfig, **image)
    vit.save_pretrained(tmp_path / "vit")
    np.save(tmp_path / "x.npy", np.zeros((4, 3, 8, 8), np.float32))
    base = "model: vit\ninputs: x.npy\nlayers: [vit.encoder.layer.0]\n"
    (tmp_path / "run.yaml").write_text(base + "model_class: checkpoint\n")
    run = load_run_config(tmp_path / "run.yaml")
    loaded = load_source(run)
    assert type(loaded.model).__name__ == "ViTForImageClassification"
    assert stage_settings(run)["capture"]["model_class"] == "checkpoint"
    (tmp_path / "auto.yaml").write_text(base)
    assert "model_class" not in stage_settings(load_run_config(tmp_path / "auto.yaml"))["capture"]
    (tmp_path / "bad.yaml").write_text(base + "model_class: classifier\n")
    one_line(
        cli("run", tmp_path / "bad.yaml", "--check"), "`model_class`", "'classifier'", "checkpoint"
    )


def test_layers_says_which_modules_run_more_than_once(tmp_path, run_cli):
    """`saeatlas layers` listed a module reused in one forward pass (one ReLU after two
    layers of other widths) with its first call's shape, as any other; its capture was
    then refused ("ran more than once in one forward pass")."""
    cli, _ = run_cli
    (tmp_path / "m.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            class Reused(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.a, self.b, self.act = nn.Linear(6, 10), nn.Linear(10, 8), nn.ReLU()

                def forward(self, x):
                    return self.act(self.b(self.act(self.a(x))))

            def build():
                return Reused()
            """
        )
    )
    np.save(tmp_path / "x.npy", np.zeros((2, 6), np.float32))
    r = cli("layers", f"{tmp_path / 'm.py'}:build", "--inputs", tmp_path / "x.npy")
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[1].strip(): line for line in r.output.splitlines() if "│" in line}
    assert "(ran 2 times: capture takes modules" in rows["act"], r.output
    assert "ran" not in rows["a"], r.output


def test_a_router_of_flattened_tokens_is_named_so(tmp_path):
    """A mixture-of-experts router (Mixtral's `mlp.gate`) gives [batch * seq, experts]:
    its capture was refused advising nn.LSTM/GRU's `batch_first` and their final states,
    which this model has none of."""
    from saeatlas.capture import capture_activations
    from saeatlas.errors import ShapeError

    experts = dict(num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=2)
    model = _built(transformers.MixtralForCausalLM, transformers.MixtralConfig, **experts)
    ids = torch.randint(0, 40, (2, 8))
    with pytest.raises(ShapeError, match="8 per sample: tokens flattened") as e:
        capture_activations(model, ids, ["model.layers.0.mlp.gate"], tmp_path / "s", progress=False)
    assert "LSTM" not in str(e.value)
