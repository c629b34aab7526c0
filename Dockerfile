# syntax=docker/dockerfile:1
# fraudstream's images, one target per service (docker-compose.yml builds each with `target:`):
#   generator  `fraudstream generate`   labelled Avro transactions          /metrics :9101
#   detector   `fraudstream detect`     exactly-once fraud routing (scale with --scale detector=3)  :9102
#   dashboard  `fraudstream dashboard`  the live page (SSE), /healthz, /metrics                     :5000
#   alerts     `fraudstream alerts`     fraud decisions to a Slack-compatible webhook               :9104
# Every setting comes from the environment (services/config.py; see docker-compose.yml).
# Build from the repository root, e.g.: docker build --target detector -t fraudstream/detector .

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY topology/ topology/
COPY services/ services/
# Wheels of fraudstream and of its dependencies, at the versions pinned in pyproject.toml. The images run
# the engine's Python sources: setup.py compiles the stateful modules only with FRAUDSTREAM_COMPILE=1,
# which `make install` sets on a development machine (mypyc and gcc, not in this slim image).
RUN pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels .

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --find-links=/wheels fraudstream \
 && useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin fraudstream
USER 10001:10001
WORKDIR /home/fraudstream
ENTRYPOINT ["fraudstream"]

FROM base AS generator
# Prometheus /metrics (the healthcheck probes it).
ENV FRAUDSTREAM_GENERATOR_METRICS_PORT=9101
EXPOSE 9101
HEALTHCHECK --interval=15s --timeout=6s --start-period=30s --retries=3 \
    CMD ["python", "-m", "services.healthcheck", "generator"]
CMD ["generate"]

FROM base AS dashboard
ENV FRAUDSTREAM_DASHBOARD_HOST=0.0.0.0 FRAUDSTREAM_DASHBOARD_PORT=5000
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=6s --start-period=30s --retries=3 \
    CMD ["python", "-m", "services.healthcheck", "dashboard"]
CMD ["dashboard"]

FROM base AS alerts
ENV FRAUDSTREAM_ALERTS_METRICS_PORT=9104
EXPOSE 9104
HEALTHCHECK --interval=15s --timeout=6s --start-period=30s --retries=3 \
    CMD ["python", "-m", "services.healthcheck", "alerts"]
CMD ["alerts"]

# Last, so that a plain `docker build .` gives the detector. The instance id defaults to the host name.
FROM base AS detector
ENV FRAUDSTREAM_DETECTOR_METRICS_PORT=9102
EXPOSE 9102
HEALTHCHECK --interval=15s --timeout=6s --start-period=30s --retries=3 \
    CMD ["python", "-m", "services.healthcheck", "detector"]
CMD ["detect"]
