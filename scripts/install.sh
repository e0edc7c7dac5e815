#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment from the pinned lock.
# Used by `make`, CI and the Dockerfile, so every machine installs the same way.
# Idempotent: when the venv already matches requirements.lock it returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PY_VERSION="$(cat .python-version)"
# The accelerator JAX runs on: cpu (the lock as is), tpu or cuda12 (adds the
# matching jax extra on top of the lock; needs the network). The Dockerfile's
# JAX_EXTRA build argument sets it.
JAX_EXTRA="${PODMETA_JAX_EXTRA:-cpu}"
STAMP="$VENV/.podmeta-install"
want="$( (cat .python-version requirements.lock pyproject.toml; echo "$JAX_EXTRA") | sha256sum | cut -d' ' -f1)"

case "$JAX_EXTRA" in
  cpu|tpu|cuda12) ;;
  *) echo "install: PODMETA_JAX_EXTRA must be cpu, tpu or cuda12 (got $JAX_EXTRA)" >&2; exit 2 ;;
esac

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

find_python() {
  if [ -n "${PODMETA_PYTHON:-}" ]; then echo "$PODMETA_PYTHON"; return; fi
  if command -v pyenv >/dev/null 2>&1; then
    local root; root="$(pyenv root)"
    if [ ! -x "$root/versions/$PY_VERSION/bin/python" ]; then
      echo "install: Python $PY_VERSION not in pyenv; installing it" >&2
      pyenv install -s "$PY_VERSION" >&2
    fi
    echo "$root/versions/$PY_VERSION/bin/python"; return
  fi
  for cand in "python$PY_VERSION" python3.10 python3; do
    if command -v "$cand" >/dev/null 2>&1 && \
       [ "$("$cand" -c 'import platform; print(platform.python_version())')" = "$PY_VERSION" ]; then
      command -v "$cand"; return
    fi
  done
  echo "install: Python $PY_VERSION not found (install pyenv, or set PODMETA_PYTHON)" >&2
  exit 1
}

PY="$(find_python)"
echo "install: creating $VENV with $("$PY" --version 2>&1) from requirements.lock" >&2
rm -rf "$VENV"
"$PY" -m venv "$VENV"
# The lock is the full closure, so --no-deps: no resolver run, same versions everywhere.
"$VENV/bin/python" -m pip install --quiet --no-deps -r requirements.lock
JAX_VERSION="$(sed -n 's/^jax==//p' requirements.lock)"
case "$JAX_EXTRA" in
  tpu) "$VENV/bin/python" -m pip install --quiet "jax[tpu]==$JAX_VERSION" \
         -f https://storage.googleapis.com/jax-releases/libtpu_releases.html ;;
  cuda12) "$VENV/bin/python" -m pip install --quiet "jax[cuda12]==$JAX_VERSION" ;;
esac
# compat mode puts the repo root on sys.path (a .pth file), so packages added
# later are importable without reinstalling.
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation \
  --config-settings editable_mode=compat -e .
echo "$want" > "$STAMP"
echo "install: done" >&2
