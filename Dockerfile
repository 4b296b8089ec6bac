# sentifyd-bridge as one OCI image: non-root (UID and GID 10001), runs on a read-only root file
# system with a tmpfs on /tmp, health check on /healthz. Build it with scripts/image.sh, which
# brings the Python packages in as wheels made from uv.lock (.cache/image/wheels/) and, unless
# BASE names one, makes the base image with debootstrap: nothing is downloaded during the build.
# No secret goes into any layer: the config is a mounted file, the secrets are environment
# variables of the running container (README, "Container image").

# Debian bookworm (Python 3.11): the runtime's base with python3; the build stage's also has
# python3-venv, and binutils when it can strip debug symbols (uvloop's alone are 12 MB).
ARG BASE=sentifyd-bridge-base:bookworm
ARG BUILD_BASE=sentifyd-bridge-build-base:bookworm

FROM ${BUILD_BASE} AS build
COPY .cache/image/wheels/deps/ /wheels/
# Every dependency exactly as uv.lock pins it, each file checked against the lock's hashes.
RUN python3 -m venv /opt/sentifyd-bridge \
 && /opt/sentifyd-bridge/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \
      --find-links /wheels --only-binary :all: --require-hashes -r /wheels/requirements.txt
COPY .cache/image/wheels/project/ /project/
RUN /opt/sentifyd-bridge/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \
      --no-deps /project/*.whl \
 && /opt/sentifyd-bridge/bin/pip uninstall --yes --disable-pip-version-check pip setuptools \
 && if command -v strip >/dev/null; then \
      find /opt/sentifyd-bridge -name '*.so' -exec strip --strip-unneeded {} +; fi \
 && find /opt/sentifyd-bridge -name '*.pyi' -delete

FROM ${BASE}
RUN groupadd --system --gid 10001 sentifyd-bridge \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin sentifyd-bridge
COPY --from=build /opt/sentifyd-bridge /opt/sentifyd-bridge
COPY container/healthcheck.py /opt/sentifyd-bridge/healthcheck.py
# Bytecode was compiled at install time; the root file system is read-only at run time.
ENV PATH=/opt/sentifyd-bridge/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BRIDGE_CONFIG=/etc/sentifyd-bridge/bridge.toml
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/opt/sentifyd-bridge/bin/python", "/opt/sentifyd-bridge/healthcheck.py"]
ENTRYPOINT ["sentifyd-bridge"]
# Inside a container loopback is out of reach from the outside: listen on every address.
CMD ["serve", "--host", "0.0.0.0"]
