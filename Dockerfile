# One image for every service (web, workers, beat, migrate); the command picks the role.
# GPU deployments build with TORCH_INDEX pointing at a CUDA wheel index, e.g.
#   docker build --build-arg TORCH_INDEX=<your CUDA wheel index URL> .
FROM python:3.11-slim

ARG TORCH_INDEX=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 TRYON_DATA_DIR=/data

RUN useradd --create-home --uid 10001 tryon
WORKDIR /app
COPY pyproject.toml README.md* ./
COPY tryon ./tryon
COPY web ./web
COPY workers ./workers
COPY migrations ./migrations
# torch first and pinned (see scripts/bootstrap.sh); mediapipe without its heavy extras.
# Editable install: `tryon db upgrade` reads the Alembic scripts from /app/migrations.
RUN if [ -n "$TORCH_INDEX" ]; then pip install torch==2.13.0 --index-url "$TORCH_INDEX"; \
    else pip install torch==2.13.0; fi \
 && pip install -e . \
 && pip install --no-deps mediapipe==0.10.21 \
 && mkdir -p /data && chown tryon /data

USER tryon
EXPOSE 8000
CMD ["gunicorn", "--workers", "2", "--bind", "0.0.0.0:8000", "--timeout", "120", "web:create_app()"]
