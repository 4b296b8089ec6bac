#!/usr/bin/env bash
# Make .venv exactly as uv.lock says, with the extras named as arguments (test, bench, mutation).
# uv itself comes from scripts/uv-requirements.txt, pinned with hashes, into its own .uv/.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .uv/bin/uv ] || ! .uv/bin/uv --version | grep -q "$(sed -n 's/^uv==\([^ ]*\).*/\1/p' scripts/uv-requirements.txt)"; then
  rm -rf .uv
  python3 -m venv .uv
  .uv/bin/python -m pip install -q --disable-pip-version-check --require-hashes \
    -r scripts/uv-requirements.txt
fi

extras=()
for extra in "$@"; do extras+=(--extra "$extra"); done
# --locked: refuse to run if uv.lock no longer matches pyproject.toml, instead of re-resolving.
UV_PYTHON_DOWNLOADS=never .uv/bin/uv sync --locked --quiet --python "$(command -v python3)" \
  "${extras[@]}"
