# The edgefleet control plane (docs/operator-guide.md, "In containers"):
#   docker build -t edgefleet-server:0.1.0 .
#   docker run -p 8080:8080 -v fleet-data:/var/lib/edgefleet --env-file server.env edgefleet-server:0.1.0
# Settings come from EDGEFLEET_* variables (EDGEFLEET_ADMIN_TOKEN, EDGEFLEET_DATABASE_URL, ...):
# pass secrets with --env-file or your orchestrator's secrets, never as build arguments.

# Build stage: a venv with the server and the PostgreSQL driver, built from this source tree.
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgefleet ./edgefleet
RUN python -m venv /opt/edgefleet \
    && /opt/edgefleet/bin/pip install --no-cache-dir ".[server,postgres]"

# Runtime stage: the venv alone, run by an unprivileged user that owns the data dir.
FROM python:3.11.7-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/edgefleet \
        --shell /usr/sbin/nologin edgefleet \
    && install -d -o edgefleet -g edgefleet -m 0700 /var/lib/edgefleet
COPY --from=build /opt/edgefleet /opt/edgefleet
ENV PATH=/opt/edgefleet/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EDGEFLEET_DATA_DIR=/var/lib/edgefleet \
    EDGEFLEET_HOST=0.0.0.0 \
    EDGEFLEET_PORT=8080
USER 10001:10001
VOLUME ["/var/lib/edgefleet"]
EXPOSE 8080
# Liveness: /healthz answers while the process serves (/readyz also checks the database).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['EDGEFLEET_PORT'], timeout=2)"]
ENTRYPOINT ["edgefleet", "server"]
