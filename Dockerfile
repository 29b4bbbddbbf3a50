# streamscore: one image for every service. The command picks the service:
#   docker run streamscore:local                 # the gateway (default)
#   docker run streamscore:local scorer          # or producer, trainer, topics, ...
# Every setting comes from the environment (KAFKA_*, STREAMSCORE_*): see the README.
#
# Pin the base by digest for reproducible builds:
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: a wheel of streamscore, installed with its dependencies into a venv -----
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when the
# dependencies change, not on every change of the source. (All of them ship wheels
# for linux amd64/arm64, so no compiler is needed.)
# The image carries both Kafka clients: kafka-python (the default) and the optional
# confluent-kafka extra, chosen at run time with STREAMSCORE_KAFKA_CLIENT.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['confluent']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# The source (.dockerignore lets only the packages in), built into a wheel and
# installed without touching the dependencies again.
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip install --no-deps /wheels/streamscore-*.whl \
 && streamscore --help >/dev/null

# --- runtime: the venv on a slim Python, run by an unprivileged user -----------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="streamscore" \
      org.opencontainers.image.description="Event-driven streaming model scorer on Apache Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 streamscore \
 && useradd --system --uid 10001 --gid streamscore --create-home \
      --home-dir /home/streamscore --shell /usr/sbin/nologin streamscore

# Owned by root and read-only to the service user: the code cannot be changed at run time.
COPY --from=builder /opt/venv /opt/venv
COPY deploy/healthcheck.py /opt/streamscore/healthcheck.py

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    STREAMSCORE_GATEWAY_BIND=0.0.0.0:8000

# An empty working directory: `python -m gunicorn` puts it on sys.path.
WORKDIR /home/streamscore
USER 10001:10001
EXPOSE 8000 9401 9402 9403

# The gateway answers GET /v2/health/live; the producer, trainer and scorer answer
# /health/live on their metrics ports (9401, 9402, 9403): it fails when the loop made
# no progress for STREAMSCORE_STALL_S with work waiting (deploy/healthcheck.py).
# Compose may override it per service.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/venv/bin/python", "/opt/streamscore/healthcheck.py"]

ENTRYPOINT ["streamscore"]
CMD ["gateway"]
