"""Write tests/fixtures/sparsify with EleutherAI sparsify itself.

The fixture is a sparsify run folder with two hookpoint folders, saved by
``SparseCoder.save_to_disk`` (eai-sparsify 1.3.3), and ``expected.safetensors``:
16 inputs per hookpoint and what sparsify's ``encode`` (dense latent
activations) and ``decode`` give for them. ``tests/sae/test_sparsify.py``
checks that saeatlas reads the same SAE to 1e-5.

sparsify pins its own dependencies, so it gets a virtualenv of its own
(``bench/.venv-sparsify``, git-ignored) with the CPU torch the project uses::

    python3 bench/make_sparsify_fixture.py            # makes the venv on first use
    python3 bench/make_sparsify_fixture.py --venv /path/to/existing/venv
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "sparsify"
TORCH = "torch==2.13.0"
SPARSIFY = "eai-sparsify==1.3.3"

# Runs inside the sparsify venv. Weights are random but not sparsify's init
# (zero biases, W_dec = encoder.weight), so that every term of the maths counts.
INNER = r"""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from sparsify import SparseCoder, SparseCoderConfig

out = Path(sys.argv[1])
torch.manual_seed(0)
expected = {}
for name, d_in, n_latents, k in (("layers.0.mlp", 12, 48, 4), ("layers.1", 10, 30, 3)):
    sae = SparseCoder(d_in, SparseCoderConfig(num_latents=n_latents, k=k))
    with torch.no_grad():
        sae.encoder.weight.normal_(0, 0.5)
        sae.encoder.bias.normal_(0, 0.2)
        sae.W_dec.normal_(0, 0.3)
        sae.b_dec.normal_(0, 1.0)
    sae.save_to_disk(out / "run" / name)
    x = torch.randn(16, d_in)
    with torch.no_grad():
        enc = sae.encode(x)
        dense = torch.zeros(16, n_latents).scatter_(-1, enc.top_indices, enc.top_acts)
        expected[f"{name}/x"] = x
        expected[f"{name}/acts"] = dense
        expected[f"{name}/x_hat"] = sae.decode(enc.top_acts, enc.top_indices)
save_file(expected, str(out / "expected.safetensors"))
print("wrote", out)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=ROOT / "bench" / ".venv-sparsify")
    args = parser.parse_args()
    python = args.venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(args.venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", TORCH], check=True)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as c:
            c.write(TORCH + "\n")  # never let sparsify's requirements pull another torch
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-c", c.name, SPARSIFY], check=True
        )
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(python), "-c", INNER, str(OUT)], check=True)


if __name__ == "__main__":
    main()
