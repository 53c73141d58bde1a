"""Twelfth hostile sweep, command-line half: paths through loops of symbolic links,
errors of flags given beside --config, negative numbers after multi-value options."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("where", ["store", "sae", "inputs", "model", "config"])
def test_a_path_through_a_loop_of_symbolic_links_is_named_not_missing(
    tmp_path, outputs, run_cli, where
):
    """A store (or SAE, inputs, model file, config) given as a link in a loop of two
    links was reported as "No activation store at 'loop'" / "does not exist"."""
    cli, one_line_error = run_cli
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    loop = tmp_path / "a"
    args = {
        "store": ["info", loop],
        "sae": ["evaluate", "--sae", loop, "--acts", outputs.store],
        "inputs": ["capture", "--model", outputs.model, "--inputs", loop, "--layers", "1"],
        "model": ["capture", "--model", f"{loop}.py:build", "--inputs", outputs.inputs],
        "config": ["train", "--acts", outputs.store, "--out", tmp_path / "o", "--config", loop],
    }[where]
    if where == "model":
        (tmp_path / "a.py").symlink_to(tmp_path / "a.py")
        args += ["--layers", "1"]
    if where in ("inputs", "model"):
        args += ["--out", tmp_path / "o"]
    one_line_error(cli(*args), "loop of symbolic links")


def test_an_error_of_a_flag_names_the_flag_not_the_config_file(tmp_path, outputs, run_cli):
    """`train --config t.yaml --k 0` said "t.yaml: `k` must be positive": the file
    holds no `k`; the flag does."""
    cli, one_line_error = run_cli
    cfg = tmp_path / "t.yaml"
    cfg.write_text("d_sae: 8\n")
    base = ["train", "--acts", outputs.store, "--out", tmp_path / "o", "--config", cfg]
    line = one_line_error(cli(*base, "--k", "0"), "--k must be positive")
    assert "t.yaml" not in line
    # a setting of the file and a flag together: both are named, each as it was given
    line = one_line_error(cli(*base, "--k", "9"), "t.yaml", "`d_sae`", "--k (9)")
    assert "`k`" not in line
    line = one_line_error(cli(*base, "--lr", "-1"), "--lr must be positive")
    assert "t.yaml" not in line


def test_a_negative_number_after_a_multi_value_option_is_its_value(tmp_path, outputs, run_cli):
    """`analyze --resolutions -1` said "No such option: -1", where `--resolutions=-1`
    gave the option's own range error."""
    cli, one_line_error = run_cli
    args = ["analyze", "--sae", outputs.sae, "--acts", outputs.store, "--out", tmp_path / "a"]
    one_line_error(cli(*args, "--resolutions", "1", "-1"), "--resolutions must be positive")
    one_line_error(cli(*args, "--resolutions", "-0.5"), "--resolutions must be positive")
    line = one_line_error(
        cli("sweep", "--acts", outputs.store, "--out", tmp_path / "s", "--values", "-2", "4"),
        "-2",
    )
    assert "No such option" not in line


@pytest.fixture
def hf_dir(tmp_path, tiny_gpt2, make_char_tokenizer):
    """A Hugging Face directory: a tiny GPT-2 with a character tokenizer."""
    folder = tmp_path / "hf"
    tiny_gpt2.save_pretrained(folder)
    make_char_tokenizer(folder)
    (tmp_path / "t.txt").write_text("abc def\nhello\n")
    return folder


def test_a_hugging_face_directory_of_an_unknown_model_type_is_named(hf_dir, run_cli):
    """A config.json of a `model_type` transformers does not know was answered "cannot be
    loaded as --model-class causal-lm ... Choose another --model-class": no class loads
    it."""
    import json

    cli, one_line_error = run_cli
    config = json.loads((hf_dir / "config.json").read_text())
    args = ["capture", "--model", hf_dir, "--inputs", hf_dir.parent / "t.txt"]
    args += ["--layers", "transformer.h.0", "--out", hf_dir.parent / "o"]
    for value, needle in (("nosuchmodel", "'nosuchmodel'"), (None, "has no `model_type`")):
        if value is None:
            config.pop("model_type")
        else:
            config["model_type"] = value
        (hf_dir / "config.json").write_text(json.dumps(config))
        line = one_line_error(cli(*args), needle, "config.json")
        assert "Choose another --model-class" not in line
    assert not (hf_dir.parent / "o").exists()


def test_a_damaged_tokenizer_file_is_one_line(hf_dir, run_cli):
    """A Hugging Face directory whose tokenizer_config.json is not JSON ended `capture`
    in a JSONDecodeError traceback."""
    cli, one_line_error = run_cli
    (hf_dir / "tokenizer_config.json").write_text("{bad")
    args = ["capture", "--model", hf_dir, "--inputs", hf_dir.parent / "t.txt"]
    args += ["--layers", "transformer.h.0", "--out", hf_dir.parent / "o"]
    one_line_error(cli(*args), "tokenizer", "tokenizer_config.json")


def test_evaluate_batch_size_zero_names_the_flag(outputs, run_cli):
    """`evaluate --batch-size 0` said "`batch_size` must be positive", a name the
    command line does not have."""
    cli, one_line_error = run_cli
    args = ["evaluate", "--sae", outputs.sae, "--acts", outputs.store, "--batch-size", "0"]
    one_line_error(cli(*args), "(--batch-size) must be positive")


def test_keras_without_the_torch_backend_says_to_set_it(tmp_path, outputs, run_cli):
    """A Keras 3 model file run without KERAS_BACKEND=torch failed with "No module named
    'tensorflow'. Fix that code": the fix is the backend, not the code. (Keras is
    already imported here, so its import of tensorflow is played by code compiled
    under Keras's path.)"""
    cli, one_line_error = run_cli
    model = tmp_path / "k.py"
    model.write_text(
        "def build():\n"
        "    exec(compile(\"raise ModuleNotFoundError('No module named tensorflow', "
        "name='tensorflow')\", '/venv/site-packages/keras/src/backend/__init__.py', 'exec'))\n"
    )
    args = ["capture", "--model", f"{model}:build", "--inputs", outputs.inputs]
    one_line_error(cli(*args, "--layers", "x", "--out", tmp_path / "o"), "KERAS_BACKEND=torch")
    assert not (tmp_path / "o").exists()


def test_a_hugging_face_directory_missing_a_weight_is_refused_not_filled_at_random(hf_dir, run_cli):
    """A model.safetensors without one of the model's weights was loaded with that
    weight drawn at random (transformers only logged a report) and the store captured
    from that other network."""
    from safetensors.torch import load_file, save_file

    cli, one_line_error = run_cli
    weights = load_file(hf_dir / "model.safetensors")
    weights.pop("transformer.h.0.mlp.c_fc.weight")
    save_file(weights, hf_dir / "model.safetensors", metadata={"format": "pt"})
    args = ["capture", "--model", hf_dir, "--inputs", hf_dir.parent / "t.txt"]
    args += ["--layers", "transformer.h.0", "--out", hf_dir.parent / "o"]
    one_line_error(cli(*args), "lacks 1 weight", "transformer.h.0.mlp.c_fc.weight")
    assert not (hf_dir.parent / "o").exists()


def test_a_config_giving_a_list_as_one_string_says_how_to_write_the_list(
    tmp_path, outputs, run_cli
):
    """`layers: 1` (or `layers: act1`) in a config was refused as "must be a list of
    text" without saying how to write one, and `[1]` is read by YAML as a number."""
    cli, one_line_error = run_cli
    cfg = tmp_path / "c.yaml"
    cfg.write_text("layers: '1'\n")
    args = ["train", "--acts", outputs.store, "--out", tmp_path / "o", "--config", cfg]
    one_line_error(cli(*args), "`layers` must be a list of text", "['1']")
