# minBERT Studio: the Streamlit app and the CLI; CPU by default.
#
#   docker build -t minbert-studio .
#   docker run --rm -p 127.0.0.1:8501:8501 -v "$PWD/checkpoints:/app/checkpoints" minbert-studio
#
# Inside the container the server listens on 0.0.0.0 (the only way a published port
# reaches it); publish it on 127.0.0.1 as above unless you put authentication in front.
# The Train page is read-only by default here (MINBERT_READ_ONLY=1: jobs can be watched,
# not started, cancelled or resumed). To train from the browser, give it a shared secret:
#   docker run ... -e MINBERT_READ_ONLY=0 -e MINBERT_SECRET="$(openssl rand -hex 16)" minbert-studio
# (python -m app.serve refuses 0.0.0.0 with an open Train page unless MINBERT_ALLOW_OPEN_TRAIN=1.)
# Every response carries X-Frame-Options: DENY and CSP frame-ancestors 'none' (app/serve.py).
#
# CUDA: a CUDA runtime base image and the matching PyTorch wheel index, e.g.
#   docker build -t minbert-studio:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#   docker run --gpus all ...
# Tests run in their own stage (pytest, playwright, hypothesis are not in the runtime image):
#   docker build --target test -t minbert-studio:test . && docker run --rm minbert-studio:test
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS runtime
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    MINBERT_READ_ONLY=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# tini reaps orphaned trainer processes (PID 1); python3-venv only where the base image
# has no Python of its own (CUDA images)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini ca-certificates \
    && if ! command -v python3 >/dev/null; then apt-get install -y --no-install-recommends python3 python3-venv; fi \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && groupadd --system --gid 10001 minbert \
    && useradd --system --uid 10001 --gid minbert --create-home --home-dir /home/minbert minbert
WORKDIR /app
COPY requirements.txt .
# torch first from the PyTorch wheel index (CPU by default: no multi-GB CUDA build), then
# the runtime requirements without the test tools
RUN pip install --index-url "${TORCH_INDEX}" "$(grep -E '^torch==' requirements.txt)" \
    && grep -vE '^(torch|pytest|playwright|hypothesis)==' requirements.txt > /tmp/runtime.txt \
    && pip install -r /tmp/runtime.txt \
    && rm /tmp/runtime.txt
COPY --chown=minbert:minbert . .
RUN mkdir -p /app/checkpoints && chown minbert:minbert /app/checkpoints
USER 10001:10001
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python3", "-m", "app.serve", "--address", "0.0.0.0", "--port", "8501"]

FROM runtime AS test
USER 0
RUN pip install -r requirements-dev.txt
USER 10001:10001
CMD ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", "-k", "not browser and not e2e"]
