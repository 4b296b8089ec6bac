#!/usr/bin/env bash
# Install the bridge from uv.lock into .venv and run the demo on http://127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/venv.sh
exec .venv/bin/sentifyd-bridge demo "$@"
