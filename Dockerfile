# One Dockerfile, one build target per process (docs/deploy.md):
#   api         Flask API (gunicorn) and `tryon db upgrade`: core + [api]; no torch, diffusers
#               or transformers
#   worker-cpu  Celery worker for the cpu queue (preview engine, webhooks) and beat (reaper):
#               core + [worker]; no torch
#   worker-gpu  Celery worker for the gpu queue (AnyDoor): core + [worker,engine] + torch
#
#   docker build --target api -t tryon-api .
#   docker build --target worker-cpu -t tryon-worker-cpu .
#   docker build --target worker-gpu -t tryon-worker-gpu .        # torch's default Linux build (CUDA)
#   docker build --target worker-gpu --build-arg TORCH_INDEX_URL=<PyTorch CPU wheel index> \
#       -t tryon-worker-anydoor-cpu .                            # AnyDoor on CPU (slow)
#
# mediapipe is installed without its declared deps (opencv-contrib-python needs libGL, jax is
# unused); pyproject.toml lists the small deps it really needs. Editable installs: `tryon db
# upgrade` reads the Alembic scripts from /app/migrations. hadolint's DL3013 ("pin versions in
# pip") is silenced where we install our own project: its pins live in pyproject.toml.
# PYTHON_IMAGE: any image with Python 3.11 and pip on PATH (a mirror, or a locally built one)
ARG PYTHON_IMAGE=python:3.11-slim
# global, so every stage can re-declare it (an ARG inside a stage ends with that stage)
ARG MEDIAPIPE_SPEC=mediapipe==0.10.21
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TRYON_DATA_DIR=/data
RUN useradd --create-home --uid 10001 tryon \
 && mkdir -p /data && chown tryon /data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tryon ./tryon
COPY web ./web
COPY workers ./workers
COPY migrations ./migrations

FROM base AS api
ARG MEDIAPIPE_SPEC
# hadolint ignore=DL3013
RUN pip install -e ".[api]" \
 && pip install --no-deps "$MEDIAPIPE_SPEC" \
 && python -c "import web, mediapipe; import importlib.util as u; assert u.find_spec('torch') is None"
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
CMD ["gunicorn", "--workers", "2", "--bind", "0.0.0.0:8000", "--timeout", "120", \
     "-c", "python:web.gunicorn_conf", "--access-logfile", "-", "web:create_app()"]

FROM base AS worker-cpu
ARG MEDIAPIPE_SPEC
# hadolint ignore=DL3013
RUN pip install -e ".[worker]" \
 && pip install --no-deps "$MEDIAPIPE_SPEC" \
 && python -c "import workers.tasks, mediapipe; import importlib.util as u; assert u.find_spec('torch') is None"
USER 10001
CMD ["celery", "-A", "workers.tasks:app", "worker", "--pool", "prefork", "-Q", "cpu", \
     "--concurrency", "2", "--loglevel", "INFO", \
     "--without-gossip", "--without-mingle", "-n", "cpu@%h"]

FROM base AS worker-gpu
ARG MEDIAPIPE_SPEC
# The torch build: the version the project pins, from pip's default index unless told
# otherwise (docs/deploy.md lists the index for each CUDA version and for CPU).
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=""
# hadolint ignore=DL3013
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"; \
    else pip install "$TORCH_SPEC"; fi \
 && pip install -e ".[worker,engine]" \
 && pip install --no-deps "$MEDIAPIPE_SPEC" \
 && python -c "import workers.tasks, torch, diffusers, transformers, mediapipe; print('torch', torch.__version__)"
USER 10001
ENV TRYON_DEVICE=cuda
CMD ["celery", "-A", "workers.tasks:app", "worker", "--pool", "prefork", "-Q", "gpu", \
     "--concurrency", "1", "--loglevel", "INFO", \
     "--without-gossip", "--without-mingle", "-n", "gpu@%h"]
