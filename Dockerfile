# syntax=docker/dockerfile:1
# The remedy operator image: ghcr.io/remedy-dev/remedy:<appVersion> (charts/remedy).
# Built by `pip install .` on python:3.11-slim.
#   docker build -t ghcr.io/remedy-dev/remedy:0.1.0 .
# NOTE: not built or tested in the development environment (there is no Docker there); the
# e2e tests run the operator as a local process instead (devenv/remedy_devenv/operator.py).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
COPY operator ./operator
RUN python -m venv /opt/remedy && /opt/remedy/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/remedy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/remedy /opt/remedy
# Numeric non-root user: the chart sets runAsNonRoot with runAsUser 10001 and a read-only
# root filesystem (only /tmp is writable, an emptyDir).
RUN groupadd --system --gid 10001 remedy && useradd --system --uid 10001 --gid 10001 --no-create-home remedy
USER 10001:10001
EXPOSE 18080 18081 8082
ENTRYPOINT ["remedy"]
CMD ["run", "-A", "--liveness", "http://0.0.0.0:8082/healthz"]
