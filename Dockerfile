FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY responder ./responder
COPY templates ./templates
COPY config ./config
RUN pip install --no-cache-dir . && useradd --system --home /app responder && mkdir -p /app/var && chown responder /app/var
USER responder
VOLUME /app/var
EXPOSE 8080
# Unhealthy when /healthz answers 503 (database unreachable, alerts not flowing) or nothing.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
# SIGTERM lets sends in flight finish (up to ~40 s): stop with `docker stop -t 60`.
# Pass secrets by environment (RESPONDER_SECRET, SMTP_PASS, …); mount your own config over /app/config.
CMD ["responder", "--config", "config/responder.toml", "serve", "--host", "0.0.0.0", "--port", "8080"]
