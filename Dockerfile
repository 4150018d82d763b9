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
# Pass secrets by environment (RESPONDER_SECRET, SMTP_PASS, …); mount your own config over /app/config.
CMD ["responder", "--config", "config/responder.toml", "serve", "--host", "0.0.0.0", "--port", "8080"]
