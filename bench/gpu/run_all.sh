#!/usr/bin/env bash
# The one prepared GPU call of a session (device tool, ~15 min of device time, 64 MiB carried):
#
#   carry: [".whl"]   command: bash bench/gpu/run_all.sh      timeout_s: 540
#
# .whl/ holds the wheels the device's python3 lacks (pydantic, dask, distributed, ...; see
# README "GPU checks"); reidaug itself is built there from the working tree. Steps:
#   1. the tests marked `gpu` (CUDA paths of the GAN base, pose maps on CUDA);
#   2. bench/gpu/check_cuda.py: every generator trained, killed, resumed and generating on CUDA,
#      against the CPU, then re-run uninterrupted (see its docstring).
# Writes $OUT/log.txt, $OUT/pytest_gpu.txt, $OUT/check_cuda.json.
#   REIDAUG_GPU_DRYRUN=1 OUT=/tmp/gpu-out bash bench/gpu/run_all.sh   # CPU smoke test with .venv
set -u
OUT=${OUT:-/tmp/reidaug-gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
T0=$(date +%s)
say() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }

if [[ -n "${REIDAUG_GPU_DRYRUN:-}" ]]; then
  PY=$PWD/.venv/bin/python; REIDAUG=$PWD/.venv/bin/reidaug; DEVICE=cpu; STEPS=${STEPS:-16}; MARK="gpu or not gpu"
  TESTS=tests/unit/models/test_base.py
else
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . || exit 1
  export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
  PY=python3; REIDAUG=/tmp/site/bin/reidaug; DEVICE=cuda; STEPS=${STEPS:-400}; MARK=gpu; TESTS=tests
fi
say "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
(cd /tmp && $PY -c "import torch, reidaug; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), reidaug.__file__)") || exit 1

say "1. tests marked gpu"
$PY -m pytest -q -p no:cacheprovider -o addopts="" --continue-on-collection-errors -m "$MARK" -W ignore "$TESTS" 2>&1 | tee "$OUT/pytest_gpu.txt" | tail -15

say "2. check_cuda.py"
REIDAUG=$REIDAUG timeout 420 $PY bench/gpu/check_cuda.py --out "$OUT" --device "$DEVICE" --steps "$STEPS"
rm -rf "$OUT/work"
say "done"
