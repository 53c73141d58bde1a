"""What a run's capture read, edited in place at the same path, makes the capture run
again: the run's record must notice it without reading the model."""

from __future__ import annotations

import os


def test_a_hugging_face_directory_saved_again_is_captured_again(tmp_path, recorded_capture):
    """A model given as a Hugging Face directory had no stamp in the run's record: new
    weights saved into it (`save_pretrained` of a fine-tuned model) left the run skipping
    every stage, its atlas describing the old model."""
    from saeatlas.pipeline.stamps import source_files

    model = tmp_path / "hf"
    model.mkdir()
    (model / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    (model / "model.safetensors").write_bytes(b"old weights")
    cfg, _, decide = recorded_capture(model)
    assert set(source_files(cfg)) == {"model", "inputs"}
    assert decide()[0].status == "skipped"
    (model / "run").mkdir()  # a run directory inside the model's, and its lock beside it
    (model / "run" / "run.json").write_text("{}")
    (model / ".run.lock").write_text("1234")
    assert decide()[0].status == "skipped"
    (model / "model.safetensors").write_bytes(b"new weights")  # the same size
    os.utime(model / "model.safetensors", ns=(1, 1))
    outcome, resume, why = decide()
    assert outcome is None and not resume and "model, inputs or labels file changed" in why
