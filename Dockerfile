FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    RESPONDER_HOST=0.0.0.0 RESPONDER_PORT=8080 \
    RESPONDER_SECRET_FILE=/app/secret/secret.key
# Exact versions first (requirements.lock): two builds of one commit are the same program.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY pyproject.toml README.md ./
COPY responder ./responder
COPY templates ./templates
COPY config ./config
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --home /app responder \
    && mkdir -p /app/var /app/secret && chown responder /app/var /app/secret && chmod 700 /app/secret
USER responder
# The database (back it up) and the server secret (keep it out of those backups) live apart.
VOLUME ["/app/var", "/app/secret"]
EXPOSE 8080
# Unhealthy when /healthz answers 503 (database unreachable, alerts not flowing) or nothing;
# it asks the port the service listens on ($RESPONDER_PORT).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('RESPONDER_PORT', '8080')}/healthz\", timeout=4)"]
# SIGTERM lets sends in flight finish (up to ~40 s): stop with `docker stop -t 60`.
# Pass secrets by environment (RESPONDER_SECRET, SMTP_PASS, …); mount your own config over /app/config.
# Host and port come from $RESPONDER_HOST / $RESPONDER_PORT (serve reads them).
CMD ["responder", "--config", "config/responder.toml", "serve"]
