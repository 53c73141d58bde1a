"""The README's examples for models and SAEs from other tools run as written: each
subsection's code blocks in order, in one fresh directory (with the repository's
tests/ beside them for the fixtures they name)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
SECTION = README.split("<!-- sources:start -->")[1].split("<!-- sources:end -->")[0]
PARTS = [p for p in SECTION.split("\n### ")[1:]]
EXAMPLES = {
    p.splitlines()[0].strip(): re.findall(r"```(python|bash)\n(.*?)```", p, flags=re.S)
    for p in PARTS
}


@pytest.mark.parametrize("title", [t for t, blocks in EXAMPLES.items() if blocks])
def test_readme_example_runs(title, tmp_path):
    blocks = EXAMPLES[title]
    os.environ.setdefault("KERAS_BACKEND", "torch")  # as the examples run (keras imports it)
    for module in ("transformer_lens", "nnsight", "keras"):
        if any(module in code for _, code in blocks):
            pytest.importorskip(module, reason=f"the example needs {module}")
    os.symlink(ROOT / "tests", tmp_path / "tests")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KERAS_BACKEND": "torch"}
    for lang, code in blocks:
        if lang == "python":
            commands = [[sys.executable, "-c", code]]
        else:
            lines = [ln for ln in code.splitlines() if ln.strip()]
            assert all(ln.startswith("saeatlas ") for ln in lines), lines
            commands = [[sys.executable, "-m", "saeatlas", *shlex.split(ln)[1:]] for ln in lines]
        for cmd in commands:
            done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
            assert done.returncode == 0, f"{title}: {cmd[-1][:80]}\n{done.stdout}{done.stderr}"
