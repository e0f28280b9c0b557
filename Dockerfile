# One image for every process of the trading core; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app:/app/gen

WORKDIR /app

COPY requirements-runtime.txt .
RUN pip install --no-cache-dir -r requirements-runtime.txt

COPY protos ./protos
COPY scripts ./scripts
RUN sh scripts/gen-protos.sh python gen --no-stubs

COPY shared ./shared
COPY services ./services

RUN useradd --system --uid 10001 trading && mkdir -p /data && chown trading /data
USER trading
VOLUME ["/data"]

# Overridden per service in docker-compose.yml.
CMD ["python", "-m", "services.order_service"]
