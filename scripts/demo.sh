#!/usr/bin/env bash
# Set up and run the default lakeguard job: real RetinaMNIST, a transpose-attacked MLP, LWLRD
# sanitizing, the gate, and publishing to the local registry folder ./registry. Extra arguments
# are Hydra overrides passed to `lakeguard run`, e.g. `bash scripts/demo.sh attack=none`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/lakeguard run "$@"
