#!/usr/bin/env bash
# Install the pose-estimator backends (mmpose stack, mediapipe, ai-edge-litert) into a venv.
#
#   scripts/install_pose.sh /path/to/venv/bin/python       # idempotent: ~1 s when up to date
#   REIDAUG_FORCE_POSE=1 scripts/install_pose.sh PYTHON    # reinstall
#
# Expects torch/torchvision and requirements/pinned.txt in that venv already (scripts/setup.sh
# installs them first). Pins, flags and why: requirements/pose.txt; facts behind them:
# ../shared/notes/INSTALL-FACTS.md. About 1 minute from a venv without these packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${1:?usage: scripts/install_pose.sh /path/to/venv/bin/python}
[[ -x "$PY" ]] || { echo "[install_pose] ERROR: $PY is not an executable python" >&2; exit 1; }
VENV_DIR=$("$PY" -c "import sys; print(sys.prefix)")
STAMP="$VENV_DIR/.reidaug-pose-stamp"

log() { printf '[install_pose] %s\n' "$*" >&2; }

# Everything the three backends import; mmcv_shim must be importable before mmpose.apis.
smoke_test() {
  "$PY" -W ignore::UserWarning - <<'EOF'
import importlib.util, pathlib, sys
shim = pathlib.Path("models/mmcv_shim.py").resolve()
spec = importlib.util.spec_from_file_location("_reidaug_mmcv_shim", shim)
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
mod.install()
import mmpose.apis, mmdet, mmengine, xtcocotools.coco  # noqa: F401
import mediapipe.python.solutions.pose  # noqa: F401
from ai_edge_litert.interpreter import Interpreter  # noqa: F401
EOF
}

inputs_hash() { cat scripts/install_pose.sh requirements/pose.txt models/mmcv_shim.py | sha256sum | cut -c1-16; }

want=$(inputs_hash)
if [[ -z "${REIDAUG_FORCE_POSE:-}" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] \
   && "$PY" -c "import importlib.metadata as m; [m.version(d) for d in ('mmpose', 'mmdet', 'mmcv-lite', 'xtcocotools', 'mediapipe', 'ai-edge-litert')]" 2>/dev/null; then
  log "pose backends up to date ($VENV_DIR)"
  exit 0
fi

pip_install() {
  local rc=0
  # pip's warnings about this machine's local index folders are noise; real errors still show.
  "$PY" -m pip install --disable-pip-version-check -q "$@" \
    2> >(grep -v "is ignored: it is neither" >&2) || rc=$?
  return "$rc"
}

start=$(date +%s)
log "build tools: setuptools<81 (mmengine imports pkg_resources), cython (xtcocotools build)"
pip_install "setuptools>=77.0.3,<81" "cython==3.3.1"
log "requirements/pose.txt (--no-deps: every dependency pinned there; xtcocotools from source)"
pip_install --no-deps --no-build-isolation --no-binary xtcocotools -r requirements/pose.txt

# Two packages that provide `cv2` in one venv overwrite each other's files.
cv2_dists=$("$PY" -m pip list --disable-pip-version-check 2>/dev/null | grep -ci '^opencv' || true)
if (( cv2_dists > 1 )); then
  log "ERROR: more than one OpenCV distribution is installed (they share the cv2 module):"
  "$PY" -m pip list --disable-pip-version-check 2>/dev/null | grep -i '^opencv' >&2
  log "fix: pip uninstall opencv-contrib-python opencv-python-headless, then reinstall opencv-python"
  exit 1
fi

smoke_test || { log "ERROR: the pose backends do not import; see the traceback above"; exit 1; }
echo "$want" > "$STAMP"
log "done in $(( $(date +%s) - start )) s"
