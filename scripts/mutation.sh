#!/usr/bin/env bash
# Mutation testing of the security core with mutmut (on demand, not in CI: about 65 minutes on
# 2 cores). The modules and the tests that guard them are in pyproject.toml's [tool.mutmut];
# the survivors and why each is equivalent are in docs/mutation.md.
#   ./scripts/mutation.sh            every module below
#   ./scripts/mutation.sh 'bridge.web.origin.*'   only these mutants (mutmut's glob of names)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/venv.sh test bench mutation
export PATH="$PWD/.venv/bin:$PATH"

targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(
    'bridge.web.origin.*' 'bridge.web.csrf.*' 'bridge.web.bearer.*' 'bridge.sessions.sealing.*'
    'bridge.settings.values.x_local_path_or__*'  # the redirect check; the rest is settings
    'bridge.broker.*' 'bridge.access.limits.*'
    # the handle chains' marks
    'bridge.sessions.manager.xǁChainǁ*' 'bridge.sessions.manager.x_spent_mark__*' 'bridge.sessions.manager.x_evicted_mark__*'
    'bridge.sessions.manager.x__has_mark__*' 'bridge.sessions.manager.x__find_mark__*'
    'bridge.sessions.manager.xǁSessionRecordǁevict__*' 'bridge.sessions.manager.xǁSessionRecordǁtake_evicted__*'
    # the fenced writes and the lock of both stores
    'bridge.store.memory.xǁMemoryStoreǁ_check_fence__*' 'bridge.store.memory.xǁMemoryStoreǁput_record__*'
    'bridge.store.memory.xǁMemoryStoreǁswap_record__*' 'bridge.store.memory.xǁMemoryStoreǁend_record__*'
    'bridge.store.memory.xǁMemoryStoreǁlock__*'
    'bridge.store.redis.xǁRedisStoreǁput_record__*' 'bridge.store.redis.xǁRedisStoreǁswap_record__*'
    'bridge.store.redis.xǁRedisStoreǁend_record__*' 'bridge.store.redis.xǁRedisStoreǁlock__*'
    'bridge.store.redis.xǁRedisStoreǁ_acquire__*' 'bridge.store.redis.xǁRedisStoreǁ_keep__*'
  )
fi
.venv/bin/mutmut run --max-children "$(nproc)" "${targets[@]}" | tr '\r' '\n' | tail -n 3
.venv/bin/mutmut results --all true | python3 scripts/mutation_report.py "${targets[@]}"
