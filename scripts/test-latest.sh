#!/usr/bin/env bash
# Run the whole suite on the newest versions pyproject.toml allows (not the lock), and print which
# packages moved against uv.lock. Extra arguments go to pytest. Afterwards ./scripts/test.sh puts
# .venv back on the lock. To take the new versions: `.uv/bin/uv lock --upgrade` and commit uv.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/venv.sh test bench  # uv itself, pinned, into .uv/
uv=.uv/bin/uv
newest=$(mktemp -d)
trap 'rm -rf "$newest"' EXIT
cp pyproject.toml uv.lock "$newest/"
"$PWD/$uv" lock --upgrade --quiet --project "$newest"

echo "Packages whose newest allowed version differs from uv.lock:"
python3 - uv.lock "$newest/uv.lock" <<'PY'
import sys
import tomllib

def versions(path):
    with open(path, "rb") as f:
        lock = tomllib.load(f)
    found = {}
    for package in lock.get("package", []):
        found.setdefault(package["name"], set()).add(package.get("version", "?"))
    return {name: ", ".join(sorted(v)) for name, v in found.items()}

locked, newest = versions(sys.argv[1]), versions(sys.argv[2])
moved = [
    f"  {name}: {locked.get(name, '-')} -> {newest.get(name, '-')}"
    for name in sorted(set(locked) | set(newest))
    if locked.get(name) != newest.get(name)
]
print("\n".join(moved) if moved else "  none: the lock is at the newest allowed versions")
PY

# .venv from the newest resolution, with the extras the README's command installs.
UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT="$PWD/.venv" "$uv" sync --quiet \
  --project "$newest" --python "$(command -v python3)" --extra test --extra bench --frozen \
  --no-install-project
"$uv" pip install --quiet --python .venv/bin/python --no-deps -e .
rm -rf "$newest"
SENTIFYD_BRIDGE_LATEST=1 exec ./scripts/test.sh "$@"
