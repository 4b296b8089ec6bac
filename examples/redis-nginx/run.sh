#!/usr/bin/env bash
# Start the whole two-instance example in one terminal; Ctrl+C stops all of it.
#
#   Redis                 127.0.0.1:6379   (append-only file in examples/redis-nginx/tmp)
#   stand-in Sentifyd     127.0.0.1:8100
#   the example shop      127.0.0.1:5000   (examples/flask_site)
#   bridge A, bridge B    127.0.0.1:8001, 127.0.0.1:8002
#   nginx                 127.0.0.1:8000   (round robin over A and B)
#
# Needs redis-server and nginx installed, and the virtualenv with `pip install -e '.[test]'`
# active (for sentifyd-bridge and flask). Run from anywhere: examples/redis-nginx/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
mkdir -p "$here/tmp"

new_key() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
# The same values for every instance: that is what lets any of them open any session.
export BRIDGE_SECRET_KEY="${BRIDGE_SECRET_KEY:-$(new_key)}"
export SITE_SECRET_KEY="${SITE_SECRET_KEY:-$(new_key)}"
export AVATAR_API_KEY="${AVATAR_API_KEY:-demo-avatar-key}"
export SHOP_TRUSTED_NEXT_ORIGINS=http://127.0.0.1:8000
nginx="${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}"

pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait; }
trap stop EXIT INT TERM

redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly yes --dir "$here/tmp" &
pids+=($!)
sentifyd-bridge fake-sentifyd --port 8100 --api-key "$AVATAR_API_KEY" &
pids+=($!)
flask --app examples.flask_site.shop:create_app run --port 5000 &
pids+=($!)
for port in 8001 8002; do
  sentifyd-bridge serve --config "$here/bridge.toml" --port "$port" &
  pids+=($!)
done
"$nginx" -e stderr -p "$here" -c nginx.conf &
pids+=($!)

echo "open http://127.0.0.1:8000/ and sign in as alice / demo-password (Ctrl+C stops everything)"
wait -n
