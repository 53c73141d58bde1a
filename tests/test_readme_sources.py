"""The README's examples for models and SAEs from other tools run as written."""

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
BLOCKS = re.findall(r"```(python|bash)\n(.*?)```", SECTION, flags=re.S)


def _needs(code: str) -> str | None:
    for module in ("transformer_lens", "nnsight"):
        if module in code:
            return module
    return None


@pytest.mark.parametrize("lang,code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(lang, code, tmp_path):
    module = _needs(code)
    if module:
        pytest.importorskip(module, reason=f"the example needs {module}")
    os.symlink(ROOT / "tests", tmp_path / "tests")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KERAS_BACKEND": "torch"}
    if lang == "python":
        cmd = [sys.executable, "-c", code]
    else:
        lines = [ln for ln in code.splitlines() if ln.strip()]
        assert all(ln.startswith("saeatlas ") for ln in lines), lines
        cmd = None
        for ln in lines:
            args = [sys.executable, "-m", "saeatlas", *shlex.split(ln)[1:]]
            done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stdout + done.stderr
        return
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
