#!/usr/bin/env bash
# Build the sentifyd-bridge container image (Dockerfile) with nothing downloaded during the build.
#
#   scripts/image.sh [TAG]          TAG defaults to sentifyd-bridge:latest
#
# 1. The bases: $BASE when set (a Debian bookworm image with python3 and python3-venv, e.g.
#    python:3.11-slim-bookworm on a machine that can pull; $BUILD_BASE, for the build stage,
#    defaults to it); otherwise a minimal Debian bookworm made here with debootstrap (as root,
#    once: cached in .cache/image/base/), imported as sentifyd-bridge-base:bookworm (python3)
#    and sentifyd-bridge-build-base:bookworm (with python3-venv and binutils, to strip the
#    extension modules' debug symbols). $DEBIAN_MIRROR picks debootstrap's mirror.
# 2. The wheels: every package uv.lock pins for the bridge (no extras, no dev groups), for the
#    base's Python, downloaded into .cache/image/wheels/deps/ (again only when the lock or the
#    base's Python changes), and this checkout built as a wheel into .cache/image/wheels/project/.
# 3. docker build, which installs those wheels offline, checking the lock's hashes again.
# docker talks to $DOCKER_HOST when set. .cache/ is git-ignored by its own .gitignore.
set -euo pipefail
cd "$(dirname "$0")/.."

tag="${1:-sentifyd-bridge:latest}"
cache=.cache/image
mkdir -p "$cache/base" "$cache/wheels"
[ -f .cache/.gitignore ] || echo '*' > .cache/.gitignore

step() { printf '%s image.sh: %s\n' "$(date +%T)" "$*" >&2; }

# uv comes pinned with hashes from scripts/uv-requirements.txt, as scripts/venv.sh makes it (that
# script also syncs .venv, which building an image must not touch).
if [ ! -x .uv/bin/uv ]; then
  step "making .uv (uv from scripts/uv-requirements.txt)"
  python3 -m venv .uv
  .uv/bin/python -m pip install -q --disable-pip-version-check --require-hashes \
    -r scripts/uv-requirements.txt
fi

# --- 1. the bases ---------------------------------------------------------------------------------
import_base() {  # TARBALL TAG: import unless TAG already holds this very tarball
  local digest
  digest="$(sha256sum "$1" | cut -c1-16)"
  if [ "$(docker image inspect -f '{{index .Config.Labels "org.sentifyd-bridge.base"}}' "$2" 2>/dev/null)" != "$digest" ]; then
    step "importing $1 as $2"
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change "LABEL org.sentifyd-bridge.base=$digest" \
      "$1" "$2" >/dev/null
  fi
}

base="${BASE:-}"
build_base="${BUILD_BASE:-${BASE:-}}"
if [ -z "$base" ]; then
  base=sentifyd-bridge-base:bookworm
  build_base=sentifyd-bridge-build-base:bookworm
  runtime_tar="$cache/base/bookworm.tar"
  build_tar="$cache/base/bookworm-build.tar"
  if [ ! -s "$runtime_tar" ] || [ ! -s "$build_tar" ]; then
    command -v debootstrap >/dev/null || { echo "image.sh: debootstrap is not installed (apt-get install debootstrap), or set BASE" >&2; exit 1; }
    [ "$(id -u)" = 0 ] || { echo "image.sh: debootstrap needs root, or set BASE" >&2; exit 1; }
    step "making a Debian bookworm base with python3 (debootstrap, about a minute and a half)"
    root="$(mktemp -d "$cache/base/root.XXXXXX")"
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,binutils bookworm "$root" \
      ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} >"$cache/base/debootstrap.log" 2>&1 \
      || { tail -20 "$cache/base/debootstrap.log" >&2; exit 1; }
    slim() {  # what a server needs no copy of: package lists and archives, docs (the licences
              # stay), manuals, translations, logs
      chroot "$root" apt-get clean
      rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/usr/share/locale/* "$root"/var/log/* "$root"/var/cache/debconf/*-old
      find "$root/usr/share/doc" -type f ! -name copyright -delete
    }
    slim
    # The build stage's: python3 -m venv and strip.
    tar --numeric-owner -C "$root" -cf "$build_tar.tmp" .
    # The runtime's: python3 alone.
    chroot "$root" dpkg --purge binutils binutils-common binutils-x86-64-linux-gnu libbinutils \
      libctf0 libctf-nobfd0 libgprofng0 libjansson4 python3-venv python3.11-venv \
      python3-pip-whl python3-setuptools-whl >>"$cache/base/debootstrap.log" 2>&1
    slim
    tar --numeric-owner -C "$root" -cf "$runtime_tar.tmp" .
    mv "$build_tar.tmp" "$build_tar" && mv "$runtime_tar.tmp" "$runtime_tar"
    rm -rf "$root"
    trap - EXIT
  fi
  import_base "$build_tar" "$build_base"
  import_base "$runtime_tar" "$base"
fi

# --- 2. the wheels -------------------------------------------------------------------------------
deps="$cache/wheels/deps"
# The lock's pins for the image's Python: environment markers (async-timeout below 3.11.3) are
# those of the base's interpreter, not of this machine's.
python_version="$(docker run --rm --network none "$build_base" python3 -c 'import platform; print(platform.python_version())')"
requirements="$(.uv/bin/uv export --frozen --no-dev --no-emit-project --no-header --quiet \
  --format requirements-txt)"
stamp="$python_version $(printf '%s' "$requirements" | sha256sum | cut -c1-16)"
if [ "$(cat "$deps/.complete" 2>/dev/null)" != "$stamp" ]; then
  step "downloading the locked wheels for Python $python_version (uv.lock changed or first run)"
  rm -rf "$deps" && mkdir -p "$deps"
  printf '%s\n' "$requirements" > "$deps/requirements.txt"
  .uv/bin/uv pip compile "$deps/requirements.txt" --python-version "$python_version" --no-deps \
    --no-header --no-annotate --quiet -o "$cache/wheels/download.txt"
  # Wheels for this machine's platform (build on the architecture you deploy to); docker build
  # checks each one against the lock's hashes.
  .uv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary :all: --python-version "$python_version" -r "$cache/wheels/download.txt" \
    -d "$deps"
  echo "$stamp" > "$deps/.complete"
fi
project="$cache/wheels/project"
rm -rf "$project" && mkdir -p "$project"
step "building this checkout's wheel"
# Through an sdist, so the wheel is built in a fresh directory: setuptools' build/lib would carry
# a module deleted since the last build into it.
.uv/bin/uv build --quiet --out-dir "$project" .
rm -f "$project/.gitignore" "$project"/*.tar.gz  # uv build drops a .gitignore there

# --- 3. the image --------------------------------------------------------------------------------
step "docker build -t $tag --build-arg BASE=$base --build-arg BUILD_BASE=$build_base"
docker build --build-arg "BASE=$base" --build-arg "BUILD_BASE=$build_base" -t "$tag" . >"$cache/build.log" 2>&1 \
  || { tail -30 "$cache/build.log" >&2; exit 1; }
step "built $tag ($(docker image inspect -f '{{.Size}}' "$tag") bytes)"
