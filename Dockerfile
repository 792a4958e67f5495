# syntax=docker/dockerfile:1
# The serving image: ONNX Runtime + FastAPI only (serving/requirements.txt, no torch) and the
# model bundle from models/export/ (git-ignored: present after `dvc repro`, or after
# `dvc pull models/export` from a remote someone published it to with scripts/publish).
# Build:  docker build -t cats-dogs:local .      Run: docker run -p 8000:8000 cats-dogs:local
# tests/test_deployment.py replays this file (ENV, WORKDIR, COPY, CMD) in a venv, so keep
# CMD in exec form and ENV in KEY=value form.

# ---- build: a virtual environment with the pinned serving dependencies -----------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY serving/requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt

# ---- runtime: the venv, the code and the bundle; no compilers, no pip cache, no root -----
FROM python:3.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="cats-dogs" \
      org.opencontainers.image.description="Cats-vs-dogs classifier: ONNX Runtime behind FastAPI"
# Read-only root file system in Kubernetes: no bytecode writes at run time (compiled below).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODEL_DIR=/app/models/export \
    HOST=0.0.0.0 \
    PORT=8000 \
    LOG_LEVEL=info \
    SHUTDOWN_GRACE_S=20
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
# Code and bundle stay owned by root: the service user can read them, not change them.
COPY contracts/ contracts/
COPY serving/ serving/
# `models/`, not `models/export/`: the allow-list .dockerignore lets in only models/export/
# (and the committed models/.gitignore, so models/ is never missing), and when the bundle is
# missing the build goes on to the next step, which stops it with a message saying how to
# get one, not a bare "not found". (A wildcard such as expor[t] does
# the same under BuildKit, but the classic builder refuses it: "no source files".)
COPY models/ models/
# models/registry.json (the promotion gate's record, docs/lifecycle.md) goes beside the
# bundle when it names this bundle: the service then shows its registry version and alias.
RUN if [ ! -s models/export/model.onnx ] || [ ! -s models/export/model.json ]; then \
      echo "No model bundle in models/export/ (model.onnx and model.json). Get one first:" >&2; \
      echo "  dvc pull models/export   the bundle dvc.lock records, from your DVC remote" >&2; \
      echo "  dvc repro                or build it here: data, training, export" >&2; \
      echo "Publish it for other clones and CI with scripts/publish (docs/deployment.md)." >&2; \
      exit 1; \
    fi \
    && if [ -f models/registry.json ] && python -c "import json, sys; sys.exit(json.load(open('models/registry.json'))['bundle_version'] != json.load(open('models/export/model.json'))['version'])"; then \
      cp models/registry.json models/export/registry.json; \
    fi \
    && python -m compileall -q contracts serving
USER 10001:10001
EXPOSE 8000
# The slim base has no curl; the live endpoint says only that the process answers.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2)"]
# `python -m serving` (serving/__main__.py) is uvicorn serving.app:app with HOST, PORT,
# LOG_LEVEL and SHUTDOWN_GRACE_S from the environment, no access log (the service logs
# requests itself, without client data), and the graceful drain on SIGTERM.
CMD ["python", "-m", "serving"]
