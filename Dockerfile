# The streamrec image: the `streamrec` command (worker, topics, train, replay, tail) and nothing else.
#   docker build -t streamrec .          (docker-compose.yml builds it for you)
# Datasets are not in the image: mount them (read-only) and point STREAMREC_DATA_DIR at them.

# --- build: hnswlib has no wheel and compiles from source, so the compiler stays in this stage -------------
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/streamrec
ENV PATH=/opt/streamrec/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HNSWLIB_NO_NATIVE=1
# HNSWLIB_NO_NATIVE: no -march=native, so the image runs on any x86-64 host, not only on the build machine.

# torch first, in a layer of its own: it is most of the image and changes least (same range as pyproject.toml).
# TORCH_INDEX_URL may name a CPU-only wheel index, which makes the image gigabytes smaller; empty = pip's default.
ARG TORCH_INDEX_URL=
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch>=2.4,<3"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY stream stream
COPY encoders encoders
COPY index index
RUN pip install .

# --- runtime -------------------------------------------------------------------------------------------------
FROM python:3.11-slim
# /models and /var/lib/streamrec are owned by the runtime user, so named volumes mounted there are writable.
RUN useradd --create-home --uid 10001 streamrec \
 && mkdir -p /models /var/lib/streamrec /data \
 && chown streamrec:streamrec /models /var/lib/streamrec
COPY --from=build /opt/streamrec /opt/streamrec
ENV PATH=/opt/streamrec/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STREAMREC_HOME=/var/lib/streamrec
USER streamrec
WORKDIR /home/streamrec
VOLUME ["/var/lib/streamrec"]
# 9310: Prometheus metrics; 9320: the HTTP API (STREAMREC_HTTP_HOST=0.0.0.0 to serve it outside the container).
EXPOSE 9310 9320
# A worker is healthy once /readyz answers 200: model, index and catalog loaded, partitions assigned and
# recovered. Only the worker serves it, so other commands (topics, train) report no health at all.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD python -c "import os, sys, urllib.request; sys.exit(0) if os.environ.get('STREAMREC_HTTP_PORT') == '0' else urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('STREAMREC_HTTP_PORT', '9320') + '/readyz', timeout=3)"
ENTRYPOINT ["streamrec"]
CMD ["--help"]
