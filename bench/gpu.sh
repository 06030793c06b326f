#!/usr/bin/env bash
# The GPU check (<= 8 minutes on one GPU): what xelm does on CUDA, measured.
#
#   1. train     bf16 training throughput (tokens/s) and MFU of a Llama-shaped expert of
#                ~134M parameters (d768, 12 layers, vocab 32000) through xelm's own loop,
#                its peak memory, and that its loss falls on a learnable token stream;
#   2. fsdp      a short job under `accelerate launch` with docs/scale.md's FSDP config on
#                every GPU (the ledger must say sharding: fsdp);
#   3. ddp       with >= 2 GPUs: a 2-process DDP job (`--multi_gpu --num_processes 2`);
#   4. ensemble  scoring one 8 x 1024 batch with 4 experts in bf16 (top1, uniform and
#                posterior ensembles) against one model;
#   5. generate  HF generate() through xelm: 8 prompts x 128 new tokens, top-1 and the
#                posterior ensemble of the 4 experts (and top-1 equal to the expert's own).
#
# Writes bench/results/gpu.json (each part's numbers or its error) and exits non-zero if
# any part failed. Run from the repository root, in the project's environment:
#
#   bash bench/gpu.sh                 # or: XELM_GPU_CHECK_LIMIT=600 bash bench/gpu.sh
#
# CPU-only machines: `python bench/gpu_check.py --smoke` runs the same parts on a tiny
# model in seconds (it checks the script, not the GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "bench/gpu.sh: no CUDA device visible to torch; for the CPU smoke run use: $PY bench/gpu_check.py --smoke" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout --signal=INT "${XELM_GPU_CHECK_LIMIT:-480}" "$PY" bench/gpu_check.py "$@"
