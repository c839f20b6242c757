#!/usr/bin/env bash
# The prepared device check of issue 18 (docs/benchmarks.md records its figures): on one CUDA GPU, no network,
# nothing installed (the kdnas source tree is used as it is, with the machine's torch and transformers).
#   bash benchmarks/gpu_check.sh            # from the repository root; about 5 minutes on an H100
# Writes gpu_check.log and gpu_check.json under $OUT when set (the device tool's output folder), else under
# runs/gpu_check/.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/gpu_check}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
{
  echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
  "$py" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
  echo "== the CUDA unit tests (distillation, fine-tuning, latency on the GPU)"
  timeout 180 "$py" -m pytest -q -p no:cacheprovider -k "gpu" \
    tests/unit/distill/test_trainer_precision.py tests/unit/evaluate/test_finetune.py tests/unit/latency/test_api.py
  tests=$?
  echo "== benchmarks/gpu_check.py"
  timeout 360 "$py" benchmarks/gpu_check.py --out "$out/gpu_check.json" "$@"
  check=$?
  echo "== exit: tests $tests, check $check"
  exit $(( tests != 0 || check != 0 ))
} 2>&1 | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
