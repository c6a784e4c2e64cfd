# kdtune with Ray: a search driver, a Ray head or a Ray worker node, CUDA-capable.
# PyPI's Linux torch wheel is the CUDA build and brings its own CUDA runtime; the host needs
# only the NVIDIA driver and container toolkit (docker run --gpus all).
#
#   docker build -t kdtune .
#   head:   docker run --gpus all --network host --shm-size 8g kdtune ray start --head --port 6379 --block
#   worker: docker run --gpus all --network host --shm-size 8g kdtune ray start --address HEAD_IP:6379 --block
#   search: docker run --network host -v $PWD/results:/app/results kdtune \
#             kdtune search search_spaces/quickstart.yaml --address HEAD_IP:6379
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
# OpenCV's two system libraries, unpinned on purpose (hadolint DL3008): bookworm's security
# updates replace their versions, and a pinned one that leaves the mirror breaks the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch first (the CUDA build), then the project, whose torch requirement it already meets
RUN pip install torch==2.13.0
COPY pyproject.toml README.md ./
COPY kdtune ./kdtune
RUN pip install .
COPY search_spaces ./search_spaces

EXPOSE 6379 8265 5000
CMD ["kdtune", "--help"]
