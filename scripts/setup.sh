#!/usr/bin/env bash
# One-time (idempotent) set-up of a local virtual environment for ndvq.
#   bash scripts/setup.sh          # runtime: .venv with torch (CPU build if none) and ndvq
#   bash scripts/setup.sh --test   # also test tools and headless Chromium for the report test
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${NDVQ_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"

# An unpinned torch resolves to a multi-GB CUDA build; install the CPU build first when none is present.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "[setup] installing PyTorch (CPU build)"
  $PIP install "torch==2.13.0"
fi

if [ "${1:-}" = "--test" ]; then
  echo "[setup] installing ndvq with test extras"
  $PIP install -e ".[test]"
  # The HTML report is tested in a real headless browser (Debian's chromium).
  if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      echo "[setup] installing headless chromium (apt)"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "[setup] could not install chromium; the browser test will be skipped"
    else
      echo "[setup] chromium not found and not root: the browser test will be skipped (install chromium to run it)"
    fi
  fi
else
  echo "[setup] installing ndvq"
  $PIP install -e .
fi
echo "[setup] done: $VENV"
