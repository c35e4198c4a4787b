#!/usr/bin/env bash
# Thread scaling 1 -> 16 threads on a lent 16-core machine (the device tool's nvidia-h200 kind: an
# Intel Xeon with AMX beside one H200), as ONE prepared run: our training step in fp32 and bf16
# against PyTorch fp32 / bf16 autocast at 1, 16, 2, 4 and 8 threads (MiniLM-L6 B32 T128 and BERT-base
# B16 T128), PyTorch's bf16 step on the GPU as the moonshot reference, the machine's CPU flags, and
# benchmarks/gemm_split.py (how the engine should cut its matrix products over 16 threads).
#
# That machine has no network and Python 3.12 with torch and transformers, so the package travels as
# wheels built here:
#
#   bash benchmarks/device_scaling.sh --prepare      # here: .whl/ (ignored) gets a cp312 wheel of this
#                                                    # checkout and the scipy-openblas32 it was built with
#
# then the device tool's `run` with carry [".whl"] and the command
#
#   bash benchmarks/device_scaling.sh
#
# Its results come back in $OUT (scaling.json after every row, gemm_split.json, log.txt). About 7-9
# minutes; give the call timeout_s 590 and hand the machine back after it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

if [[ "${1:-}" == "--prepare" ]]; then
    py312=""
    for c in ${PY312:-} python3.12 /root/.pyenv/versions/3.12*/bin/python3.12; do
        if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then py312=$c; break; fi
    done
    [[ -n "$py312" ]] || { echo "device_scaling.sh: error: no working python3.12 here (set PY312)" >&2; exit 2; }
    venv=$(mktemp -d)/py312
    "$py312" -m venv "$venv"
    "$venv/bin/pip" install -q setuptools wheel "numpy>=2.0" scipy-openblas32
    sob=$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('scipy-openblas32'))")
    rm -rf .whl && mkdir -p .whl
    "$venv/bin/pip" wheel -q --no-deps --no-build-isolation -w .whl .
    "$venv/bin/pip" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "scipy-openblas32==$sob"
    ls -l .whl
    exit 0
fi

: "${OUT:?device_scaling.sh: error: run it through the device tool (OUT is unset), or use --prepare here}"
ls .whl/instantsoup-*-cp312-*.whl >/dev/null || { echo "device_scaling.sh: error: no .whl/ (carry it)" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
{
    echo "== machine"
    lscpu | grep -E '^(Model name|Socket|Core|Thread|CPU\(s\)|L2|L3)'
    echo "matrix flags: $(grep -o -w -E 'amx_bf16|amx_tile|avx512_bf16|avx512f|avx512_fp16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    python3 -c "import instantsoup, json; print(json.dumps(instantsoup.build_info()))"
    echo "== train step, threads 1 16 2 4 8"
    python3 benchmarks/train_step.py --sizes minilm,base --threads 1,16,2,4,8 --steps 2 --warmup 1 \
        --precision fp32,bf16 --torch-cuda --json "$OUT/scaling.json"
    echo "== GEMM split: gemm_par's row blocks vs 2-D blocks vs OpenBLAS's own threads (BERT-base shapes)"
    timeout 150 python3 benchmarks/gemm_split.py --size base --threads 1,4,16 --reps 1 \
        --json "$OUT/gemm_split.json" || echo "gemm_split.py stopped (rc $?)"
} 2>&1 | tee "$OUT/log.txt"
