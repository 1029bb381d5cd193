#!/usr/bin/env bash
# GPU recipe for issue 7 (pose-guided generation) and the GPU rows of bench/generate.py, as run
# on a lent H200 through the device tool (one call; what it wrote is summarised in BENCHMARKS.md).
#
# Needs, beside the checkout (both ignored by git, carried by the tool):
#   .gpu/  CUHK01 as lossless WebP + MoveNet keypoints as OpenPose CSV  (bench/gpu/pack_cuhk01.py)
#   .whl/  wheels the machine's python3 lacks (pydantic, dask, ...) and reidaug's own wheel
# Writes $OUT/log.txt and $OUT/results.tgz (re-packed after every step, so a step that runs out of
# time still leaves the earlier ones). Every step has its own time limit; the whole script stays
# under BUDGET seconds (default 560).
#
#   REIDAUG_GPU_DRYRUN=1 OUT=/tmp/out bash bench/gpu/issue7.sh   # CPU smoke test of the recipe
set -u
T0=$(date +%s)
BUDGET=${BUDGET:-560}
OUT=${OUT:-/tmp/reidaug-gpu-out}
R=$OUT/r
mkdir -p "$R"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
pack() { tar czf "$OUT/results.tgz" -C "$OUT" r 2>/dev/null; }
say() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }

if [[ -n "${REIDAUG_GPU_DRYRUN:-}" ]]; then
  PY=${PY:-.venv/bin/python}; REIDAUG=${REIDAUG:-.venv/bin/reidaug}
  ITER_TIMING=12; TRAIN_S=20; BENCH_IMAGES=8; NPAIRS=50; NGF=16; NDF=16; BATCH=4; NOCPU=
else
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
  PY=python3; REIDAUG=/tmp/site/bin/reidaug
  ITER_TIMING=150; TRAIN_S=${TRAIN_S:-180}; BENCH_IMAGES=256; NPAIRS=1000; NGF=128; NDF=64; BATCH=16; NOCPU=--no-cpu
fi

say "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
(cd /tmp && $PY -c "import torch, cv2, h5py, dask, reidaug; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '-', '| cv2', cv2.__version__, '| dask', dask.__version__, '| reidaug', reidaug.__version__, reidaug.__file__)") || exit 1
nproc; git log -1 --format='%h %s' 2>/dev/null || true

# -- 1. PG2 on CUHK01 (same data, poses, split and size as configs/real/cuhk01_posegan.yaml) ----
CFG=configs/real/cuhk01_posegan.yaml
COMMON=(--set stages.ingest.params.root="$PWD/.gpu/cuhk01"
        --set stages.extract-pose.params.backend=openpose-csv
        --set stages.extract-pose.params.annotations="$PWD/.gpu/cuhk01_movenet.csv"
        --set stages.extract-pose.params.model_path=null
        --set stages.score-posegan.params.judge="$PWD/.gpu/osnet_x0_25_msmt17.onnx"
        --set stages.score-posegan.params.num_pairs=$NPAIRS
        --set stages.train-posegan.params.ngf=$NGF       # PG2's own width 128 (the CPU run: 32)
        --set stages.train-posegan.params.ndf=$NDF
        --set stages.train-posegan.params.train_batch=$BATCH  # PG2's batch 16 (the CPU run: 8)
        --set stages.train-posegan.params.checkpoint_every=2000
        --set stages.train-posegan.params.log_every=100)
if [[ -z "${ITERS:-}" ]]; then  # ITERS=N skips the timing run
  say "timing run: $ITER_TIMING steps"
  timeout 120 $REIDAUG stage -c $CFG -w /tmp/ws "${COMMON[@]}" \
    --set stages.train-posegan.params.iterations=$ITER_TIMING train-posegan > "$R/timing.log" 2>&1
  rc=$?; tail -5 "$R/timing.log"; [[ $rc == 0 ]] || { say "timing run failed ($rc)"; pack; exit 1; }
  # the timing run also ingested and extracted: time only its train-posegan line
  SPS=$(grep -oE 'train-posegan.* done in [0-9.]+ s' "$R/timing.log" | grep -oE '[0-9.]+ s$' | tr -d ' s')
  ITERS=$($PY -c "s=float('$SPS')/$ITER_TIMING; print(max(100, int($TRAIN_S/s)//100*100))")
  say "timing: $ITER_TIMING steps in $SPS s -> $ITERS steps for ${TRAIN_S} s"
fi
timeout $(( $(left) - 60 )) $REIDAUG stage -c $CFG -w /tmp/ws "${COMMON[@]}" \
  --set stages.train-posegan.params.iterations=$ITERS score-posegan > "$R/run.log" 2>&1
say "pipeline rc $?"; tail -40 "$R/run.log"
for d in /tmp/ws/cache/score-posegan/*/*/ /tmp/ws/cache/train-posegan/*/*/; do
  n=$(echo "$d" | awk -F/ '{print $(NF-3) "-" substr($(NF-1), 1, 8)}')  # stage-key
  mkdir -p "$R/$n"
  (cd "$d" && find . -maxdepth 4 -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.png' -o -name '*.md' \) \
    -size -4M -exec cp --parents {} "$R/$n/" \;)
done
pack

# -- 2. bench/generate.py GPU rows (--no-cpu: the CPU rows come from the 2-core machine) -----------
for g in ${BENCHES-pg2 deformable camstyle}; do  # BENCHES="" skips them
  l=$(left); (( l > 40 )) || { say "no time left for bench $g"; break; }
  lim=$(( l > 110 ? 100 : l - 10 ))
  say "bench $g (limit $lim s)"
  timeout $lim $PY bench/generate.py --generator $g --data synthetic --rounds 1 $NOCPU \
    --images 8 --batch-sizes 1,8 --variant-images 0 --breakdown-images 8 --matmul-reps 3 \
    --gpu-images $BENCH_IMAGES --gpu-batch-sizes 1,16,64 --out "$R/bench_$g.json" > "$R/bench_$g.log" 2>&1
  say "bench $g rc $?"; tail -25 "$R/bench_$g.log"; pack
done
say "done"; pack
