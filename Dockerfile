# podmeta: the same install as `make` (scripts/install.sh from requirements.lock).
#
#   docker build -t podmeta .                          # CPU
#   docker build --build-arg JAX_EXTRA=tpu -t podmeta .     # TPU VMs
#   docker build --build-arg JAX_EXTRA=cuda12 -t podmeta .  # NVIDIA GPUs
#   docker run --rm -it podmeta make train
#
# Launchpad 0.5.2 and Reverb 0.7.2 ship wheels for Python 3.10 only, built
# against TF 2.8: the image's Python is pinned to .python-version.
FROM python:3.10.13-slim-bookworm

ARG JAX_EXTRA=cpu
ENV PODMETA_JAX_EXTRA=${JAX_EXTRA} \
    PODMETA_PYTHON=/usr/local/bin/python3.10 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends make procps \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /podmeta
# Dependencies first, so code changes do not redo the install layer.
COPY .python-version requirements.lock pyproject.toml README.md ./
COPY scripts/install.sh scripts/install.sh
COPY podmeta/__init__.py podmeta/__init__.py
RUN bash scripts/install.sh
# The editable install (compat mode) put /podmeta on sys.path: the code copied
# now is what runs.
COPY . .

ENV PATH=/podmeta/.venv/bin:$PATH
CMD ["make", "train"]
