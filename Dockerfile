# syntax=docker/dockerfile:1
# The one image every KFP component and every training-job pod runs: the `bodymap` package on a CUDA runtime.
#   docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t registry.example.com/bodymap:0.1.0 .
# Give every build its own tag (never reuse one): KFP's cache keys on the image name, not on what is inside it.
# The CUDA libraries torch and Warp use come with their wheels; the base image brings the NVIDIA container
# runtime settings, and the node the NVIDIA driver.
FROM nvidia/cuda:13.0.1-runtime-ubuntu22.04

ARG DEBIAN_FRONTEND=noninteractive
# Python 3.11, the project's version, from the deadsnakes PPA (Ubuntu 22.04 ships 3.10).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gnupg software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv libgomp1 \
 && apt-get purge -y --auto-remove software-properties-common gnupg \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ANNY_CACHE_DIR=/opt/bodymap/anny-cache

# The locked dependencies first, in a layer that changes only with requirements.lock (a stub package stands in for
# the sources), then the project itself. `.[pipeline]`: kfp and the Kubernetes client, which components and the
# training-job launcher need; the dev tools stay out.
# The locked torch 2.14.1 is a CUDA 13 build (sm_75 and newer). V100 nodes (sm_70) need a build that still targets
# them, from PyTorch's own index (the lock's `torch==2.14.1` admits its local versions, e.g. +cu126):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 ...
ARG TORCH_INDEX_URL=
WORKDIR /opt/bodymap/build
COPY pyproject.toml requirements.lock README.md ./
RUN python3.11 -m venv "$VIRTUAL_ENV" \
 && mkdir -p src/bodymap && touch src/bodymap/__init__.py \
 && pip install --no-cache-dir ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
      -c requirements.lock ".[pipeline]" \
 && pip uninstall -y bodymap \
 && rm -rf src
COPY src ./src
RUN pip install --no-cache-dir --no-deps . \
 && pip check \
 && rm -rf /opt/bodymap/build

# UID 1000: the KFP pods and the training jobs run as this user (runAsUser: 1000).
RUN useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin bodymap \
 && mkdir -p "$ANNY_CACHE_DIR" /work \
 && chown bodymap:bodymap "$ANNY_CACHE_DIR" /work
USER 1000:1000
# Anny builds its model cache on first use (~2 minutes): once here, not in every pod.
RUN python -c "import anny; anny.Anny(topology='anny')"

# No params.yaml here: stages start from the schema defaults plus what the pipeline passes.
WORKDIR /work
ARG GIT_COMMIT=unknown
ENV BODYMAP_GIT_COMMIT=$GIT_COMMIT
ENTRYPOINT ["bodymap"]
CMD ["--help"]
