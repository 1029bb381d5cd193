#!/usr/bin/env bash
# The one prepared GPU call of a session (device tool, ~15 min of device time, 64 MiB carried):
#
#   carry: [".whl"]   command: bash bench/gpu/run_all.sh      timeout_s: 540
#
# .whl/ holds the wheels the device's python3 lacks (pydantic, dask, distributed, ...; see
# README "GPU checks"); reidaug itself is built there from the working tree. Steps:
#   1. the tests marked `gpu` (CUDA paths of the GAN base, pose maps on CUDA);
#   2. bench/gpu/check_cuda.py: every generator trained, killed, resumed and generating on CUDA,
#      against the CPU, then re-run uninterrupted (see its docstring);
#   3. the speed rows of BENCHMARKS.md (speed issue): each generation stage (CamStyle's CycleGAN at
#      256 x 128, PG2 and Deformable GAN at 128 x 64) against its model alone and the batch-1 reference
#      loop, with the measured matmul ceiling (bench/generate.py on the synthetic people: CUHK01 does not
#      travel); evaluation at 20k x 100k on the GPU (bench/eval.py --device cuda); the re-ID trainer's
#      steps/s at 128 x 64 and 256 x 128, fp32 and AMP (bench/train_speed.py).
# Every step has its own time limit, so one that overruns still leaves the others' files.
# Writes $OUT/log.txt, $OUT/pytest_gpu.txt, $OUT/check_cuda.json, $OUT/generate_*.json, $OUT/eval.json,
# $OUT/train_speed.json;
# copy them to bench/results/gpu_<date>/ and the numbers into BENCHMARKS.md.
#   REIDAUG_GPU_DRYRUN=1 OUT=/tmp/gpu-out bash bench/gpu/run_all.sh   # CPU smoke test with .venv
#   STEPS_TO_RUN="3" GENERATORS="pg2" ...                              # some steps / generators only
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
  GEN_ARGS="--quick --no-gpu --images 4 --data synthetic"; EVAL_ARGS="--sizes 200x1000 --big none --device cpu"
  GEN_LIMIT=240; CHECK_LIMIT=420; TRAIN_ARGS="--device cpu --sizes 32x16 --ids 16 --per-cam 4 --epochs 2 --workers 0"
else
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . || exit 1
  export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
  PY=python3; REIDAUG=/tmp/site/bin/reidaug; DEVICE=cuda; STEPS=${STEPS:-400}; MARK=gpu; TESTS=tests
  GEN_ARGS="--no-cpu --data synthetic --gpu-images 1024 --rounds 2"
  EVAL_ARGS="--sizes 2000x10000 --big 20000x100000 --device cuda"
  GEN_LIMIT=60; CHECK_LIMIT=360  # uncalibrated: no GPU lent since the speed steps (and 6 kills) joined
  TRAIN_ARGS="--device cuda --sizes 128x64,256x128 --epochs 3 --workers 8"
fi
say "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
(cd /tmp && $PY -c "import torch, reidaug; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), reidaug.__file__)") || exit 1

RUN=${STEPS_TO_RUN:-"1 2 3"}
want() { [[ " $RUN " == *" $1 "* ]]; }

if want 1; then
say "1. tests marked gpu"
$PY -m pytest -q -p no:cacheprovider -o addopts="" --continue-on-collection-errors -m "$MARK" -W ignore "$TESTS" 2>&1 | tee "$OUT/pytest_gpu.txt" | tail -15

fi

if want 2; then
say "2. check_cuda.py"
REIDAUG=$REIDAUG timeout "$CHECK_LIMIT" $PY bench/gpu/check_cuda.py --out "$OUT" --device "$DEVICE" --steps "$STEPS"
rm -rf "$OUT/work"
fi

if want 3; then
say "3. speed: generation stages vs model alone vs the batch-1 loop; evaluation at scale"
for g in ${GENERATORS:-camstyle pg2 deformable}; do
  timeout "$GEN_LIMIT" $PY bench/generate.py --generator "$g" $GEN_ARGS --out "$OUT/generate_$g.json" 2>&1 | tail -25 \
    || echo "generate $g: failed or out of time"
done
timeout 120 $PY bench/eval.py $EVAL_ARGS --out "$OUT/eval.json" 2>&1 | tail -8 || echo "eval: failed or out of time"
for amp in "" "--amp"; do  # the re-ID trainer's steps/s, fp32 and mixed precision
  timeout 90 $PY bench/train_speed.py $TRAIN_ARGS $amp --out "$OUT/train_speed.json" 2>&1 | tail -3 \
    || echo "train_speed $amp: failed or out of time"
done
fi
say "done"
