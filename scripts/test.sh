#!/usr/bin/env bash
# Set up what the tests need on a fresh machine (system packages, a virtualenv, the OpenID
# provider's npm packages), then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)  # the Sentinel failover tests
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)  # redis-cli --cluster create
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)  # the OpenID provider the SSO tests run
# ActiveSupport mints the Rails cookies the rails cookie format's tests verify.
ruby -e 'require "active_support"; require "active_support/message_encryptor"' >/dev/null 2>&1 || need+=(ruby ruby-activesupport)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing system packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'

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

exec .venv/bin/python -m pytest "$@"
