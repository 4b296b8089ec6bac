#!/usr/bin/env bash
# Mutation testing of the security core with mutmut (on demand, not in CI: about 20 minutes on
# 2 cores). The modules and the tests that guard them are in pyproject.toml's [tool.mutmut];
# the survivors and why each is equivalent are in docs/mutation.md.
#   ./scripts/mutation.sh            every module below
#   ./scripts/mutation.sh 'bridge.origin.*'   only these mutants (mutmut's glob of names)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/venv.sh test bench mutation
export PATH="$PWD/.venv/bin:$PATH"

targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(
    'bridge.origin.*' 'bridge.csrf.*' 'bridge.bearer.*' 'bridge.sealing.*'
    'bridge.settings.values.x_local_path_or__*'  # the redirect check; the rest is settings
    'bridge.broker.*' 'bridge.store.memory.*' 'bridge.store.redis.*' 'bridge.limits.*'
  )
fi
.venv/bin/mutmut run --max-children "$(nproc)" "${targets[@]}" | tr '\r' '\n' | tail -n 3
.venv/bin/mutmut results --all true | python3 scripts/mutation_report.py "${targets[@]}"
