"""Settings files of the fifth hostile sweep: `train`, `sweep` and `analyze --config`
given a `saeatlas run` config read its section, and must not drop what lies beside it."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "command,section,extra",
    [
        ("train", "train", ["--seeds", "1"]),
        ("sweep", "train", ["--values", "2", "4"]),
        ("analyze", "analyze", []),
    ],
)
def test_a_setting_beside_the_section_of_a_run_config_is_refused(
    guarded, run_cli, tmp_path, command, section, extra
):
    """`tokens: 2000` written beside `train: {k: 4}`: the file was read as a run config's
    `train` section alone and trained 375,000 rows instead of 2,000, without a word."""
    cli, assert_one_line_error = run_cli
    other = "n_null" if section == "analyze" else "tokens"
    config = tmp_path / "c.yaml"
    config.write_text(f"{other}: 2\n{section}: {{seed: 1}}\n")
    acts = ["--acts", guarded.store] + (["--sae", guarded.sae] if command == "analyze" else [])
    result = cli(command, *acts, "--out", tmp_path / "out", "--config", config, *extra, "-q")
    assert_one_line_error(result, f"`{other}` is at the top level", f"move it into `{section}:`")
    assert not (tmp_path / "out").exists()
