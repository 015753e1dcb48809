# superlink-async: the SuperLink in a container, next to flwr 1.18.0's flwr-serverapp.
#
#   docker build -t superlink-async .
#   docker run --volume ./state/:/app/state -p 9091-9093:9091-9093 superlink-async \
#       --insecure --database state.db
#
# The working directory IS the state volume, so a relative --database (and the default
# FAB storage under $FLWR_HOME) land in the host's ./state directory.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_HOME=/app/state/.flwr \
    FLWR_TELEMETRY_ENABLED=0

RUN groupadd --gid 49999 app \
    && useradd --uid 49999 --gid 49999 --home-dir /app --create-home --shell /usr/sbin/nologin app

COPY pyproject.toml README.md /tmp/build/
COPY superlink_async /tmp/build/superlink_async
RUN pip install "/tmp/build[flwr]" && rm -rf /tmp/build \
    && mkdir -p /app/state && chown -R app:app /app

# The `app` user, by number so that the host resolves it the same way.
USER 49999:49999
WORKDIR /app/state
VOLUME ["/app/state"]
EXPOSE 9091 9092 9093 9095

# grpc.health.v1 on the Exec port; the server handles SIGTERM itself (graceful drain, then
# exit 0), and a second signal forces the exit, so no init process is needed as PID 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "superlink_async.probe", "--address", "127.0.0.1:9093"]

ENTRYPOINT ["python", "-m", "superlink_async"]
