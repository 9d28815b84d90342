#!/usr/bin/env bash
# One-time (idempotent) set-up of a local virtual environment for ndvq.
#   bash scripts/setup.sh                # runtime: .venv with torch (CPU build if none) and ndvq
#   bash scripts/setup.sh --test         # also test tools and headless Chromium for the report test
#   bash scripts/setup.sh --cuda         # a CUDA build of torch instead of the CPU one (docs/gpu.md)
#   bash scripts/setup.sh --cuda --test  # flags combine; --dry-run prints the pip/apt commands instead
# Environment: PYTHON (interpreter, default python3), NDVQ_VENV (default .venv), TORCH_INDEX_URL (with
# --cuda: a PyTorch wheel index for another CUDA version; default: the Linux torch wheel of PyPI, a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${NDVQ_VENV:-.venv}
TORCH_VERSION=2.13.0
TEST=0; CUDA=0; DRY=0
for arg in "$@"; do
  case "$arg" in
    --test) TEST=1 ;;
    --cuda) CUDA=1 ;;
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "[setup] unknown option $arg (expected --test, --cuda, --dry-run)" >&2; exit 2 ;;
  esac
done
run() { if [ "$DRY" = 1 ]; then echo "+ $*"; else "$@"; fi; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  run "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
has_torch() { "$VENV/bin/python" -c "import torch" 2>/dev/null; }
has_cuda_torch() { "$VENV/bin/python" -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; }

if [ "$CUDA" = 1 ]; then
  # PyPI's Linux torch wheel is the CUDA build (its CUDA libraries come as nvidia-* wheels, a few GB);
  # local wheel folders (find-links) often hold the +cpu build, so they are ignored for this one install.
  if has_cuda_torch; then
    echo "[setup] PyTorch with CUDA already installed"
  else
    echo "[setup] installing PyTorch $TORCH_VERSION (CUDA build; a few GB)"
    INDEX=(); [ -n "${TORCH_INDEX_URL:-}" ] && INDEX=(--index-url "$TORCH_INDEX_URL")
    run env PIP_FIND_LINKS= "${PIP[@]}" install --force-reinstall "torch==$TORCH_VERSION" "${INDEX[@]}"
    [ "$DRY" = 1 ] || has_cuda_torch || {
      echo "[setup] the installed torch has no CUDA support (a CPU-only wheel was picked); set TORCH_INDEX_URL" \
           "to a PyTorch CUDA wheel index and run again (docs/gpu.md)" >&2; exit 1; }
  fi
# An unpinned torch resolves to a multi-GB CUDA build; install the CPU build first when none is present.
elif ! has_torch; then
  echo "[setup] installing PyTorch (CPU build)"
  run "${PIP[@]}" install "torch==$TORCH_VERSION"
fi

if [ "$TEST" = 1 ]; then
  echo "[setup] installing ndvq with test extras"
  run "${PIP[@]}" install -e ".[test]"
  # The HTML report is tested in a real headless browser (Debian's chromium).
  if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      echo "[setup] installing headless chromium (apt)"
      if [ "$DRY" = 1 ]; then echo "+ apt-get install -y -qq chromium"; else
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
          || echo "[setup] could not install chromium; the browser test will be skipped"
      fi
    else
      echo "[setup] chromium not found and not root: the browser test will be skipped (install chromium to run it)"
    fi
  fi
else
  echo "[setup] installing ndvq"
  run "${PIP[@]}" install -e .
fi
echo "[setup] done: $VENV"
