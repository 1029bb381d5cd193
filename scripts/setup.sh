#!/usr/bin/env bash
# Build (or refresh) the project's virtual environment in .venv from nothing.
#
#   scripts/setup.sh            # idempotent: a second call with nothing changed takes ~1 s
#   scripts/setup.sh --test     # also what only the tests need: requirements/test.txt (playwright) and
#                               # Debian's chromium, best effort (the report's browser test drives it and
#                               # skips with the reason where it is absent; never a downloaded browser)
#   REIDAUG_FORCE_SETUP=1 scripts/setup.sh   # reinstall everything
#
# What it does, in order (facts behind each step: ../shared/notes/INSTALL-FACTS.md):
#   1. apt packages when missing: python3-venv, libgl1 + libglib2.0-0 (opencv-python's `import cv2`)
#   2. .venv with pip
#   3. torch + torchvision at exact pins (override with REIDAUG_TORCH_SPEC="torch==X torchvision==Y")
#   4. requirements/pinned.txt (versions tested here), then the pose backends
#      (scripts/install_pose.sh: mmpose stack, mediapipe, ai-edge-litert; requirements/pose.txt)
#   5. the reidaug package itself, editable
#   6. with --test: requirements/test.txt and chromium (apt), each only when missing
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}
STAMP="$VENV/.reidaug-setup-stamp"

log() { printf '[setup] %s\n' "$*" >&2; }

inputs_hash() {
  cat scripts/setup.sh scripts/install_pose.sh models/mmcv_shim.py requirements/*.txt setup.cfg pyproject.toml \
    2>/dev/null | sha256sum | cut -c1-16
}

FOR_TESTS=0
for arg in "$@"; do
  case "$arg" in
    --test) FOR_TESTS=1 ;;
    *) log "unknown option $arg (expected --test)"; exit 2 ;;
  esac
done

apt_install() {  # apt_install PKG...: with sudo when not root; returns apt-get's status
  local SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# 6. what only the tests need; best effort for the browser: its test skips with the reason without it
test_extras() {
  (( FOR_TESTS )) || return 0
  if ! "$VENV/bin/python" -c "import playwright" 2>/dev/null; then
    log "installing requirements/test.txt"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r requirements/test.txt \
      2> >(grep -v "is ignored: it is neither" >&2)
  fi
  if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
      log "installing chromium for the report's browser test (about a minute)"
      apt_install chromium || log "WARNING: could not install chromium; the browser test will skip"
    else
      log "WARNING: no chromium and no apt-get; the report's browser test will skip"
    fi
  fi
}

want=$(inputs_hash)
if [[ -z "${REIDAUG_FORCE_SETUP:-}" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] \
   && "$VENV/bin/python" -c "import reidaug, torch, cv2, h5py, dask, mediapipe, mmpose" 2>/dev/null; then
  log "environment up to date ($VENV)"
  test_extras
  exit 0
fi

# 1. System packages -----------------------------------------------------------------------
apt_missing=()
"$PY" -c "import venv, ensurepip" 2>/dev/null || apt_missing+=(python3-venv)
ldconfig -p 2>/dev/null | grep -q 'libGL.so.1' || apt_missing+=(libgl1)
ldconfig -p 2>/dev/null | grep -q 'libgthread-2.0.so.0' || apt_missing+=(libglib2.0-0)
if (( ${#apt_missing[@]} )); then
  if command -v apt-get >/dev/null 2>&1; then
    log "installing system packages: ${apt_missing[*]}"
    apt_install "${apt_missing[@]}"
  else
    log "WARNING: missing system packages ${apt_missing[*]} and no apt-get; install them by hand"
  fi
fi

# 2. venv ----------------------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
# pip's warnings about this machine's local index folders are noise; real errors still show.
pip_install() {
  local rc=0
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" \
    2> >(grep -v "is ignored: it is neither" >&2) || rc=$?
  return "$rc"
}
pip_install --upgrade pip

# 3. torch ---------------------------------------------------------------------------------
if [[ -n "${REIDAUG_TORCH_SPEC:-}" ]]; then
  torch_spec=($REIDAUG_TORCH_SPEC)
elif [[ "$(uname -m)" == "aarch64" ]]; then
  torch_spec=(torch==2.9.1 torchvision==0.24.1)
else
  torch_spec=(torch==2.14.1 torchvision==0.29.1)
fi
have_torch=$("$VENV/bin/python" -c "import torch, torchvision; print(f'torch=={torch.__version__.split(\"+\")[0]} torchvision=={torchvision.__version__.split(\"+\")[0]}')" 2>/dev/null || true)
if [[ "$have_torch" != "${torch_spec[*]}" ]]; then
  log "installing ${torch_spec[*]} (about 1 minute here)"
  pip_install "${torch_spec[@]}"
fi

# 4. pinned dependencies -------------------------------------------------------------------
log "installing requirements/pinned.txt"
pip_install -r requirements/pinned.txt

# 4b. pose backends: mmpose (mmcv-lite + import shim, --no-deps, xtcocotools from source),
#     mediapipe (BlazePose bundled), ai-edge-litert (MoveNet); pins in requirements/pose.txt
log "installing the pose backends (scripts/install_pose.sh)"
scripts/install_pose.sh "$VENV/bin/python"

# 5. the package ---------------------------------------------------------------------------
log "installing reidaug (editable)"
pip_install --no-deps --no-build-isolation -e .

"$VENV/bin/python" -c "import reidaug, reidaug.pipeline, torch, cv2, h5py, dask" \
  || { log "ERROR: the environment does not import; see the messages above"; exit 1; }
echo "$want" > "$STAMP"
test_extras
log "done: $VENV ($(du -sh "$VENV" 2>/dev/null | cut -f1))"
