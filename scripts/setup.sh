#!/usr/bin/env bash
# Create .venv and install lakeguard with its pinned dependencies. Idempotent: a second run only
# checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: lakeguard needs Python 3.11; $PYTHON is $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
  exit 2
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check)

# torch first and pinned: an unpinned torch, or one pulled in by another package, is a multi-GB
# CUDA build. 2.13.0 resolves to the CPU wheel on the build machines.
"${pip[@]}" install -q torch==2.13.0
"${pip[@]}" install -q -e ".[test]"
# medmnist's declared dependencies pull torchvision, whose PyPI build does not import beside torch
# 2.13.0; lakeguard uses only its metadata table and numpy, pillow are already installed.
"${pip[@]}" install -q --no-deps medmnist==3.0.2
.venv/bin/python -c 'import torch, kfp, medmnist, lakeguard; print(f"setup: torch {torch.__version__}, kfp {kfp.__version__}, medmnist {medmnist.__version__}, lakeguard {lakeguard.__version__}")'
