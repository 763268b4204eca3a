#!/usr/bin/env bash
# Install (if needed) and run the test suite. Slow tests run too unless DATABLAME_FAST=1.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
marker=()
if [ "${DATABLAME_FAST:-0}" = "1" ]; then marker=(-m "not slow"); fi
.venv/bin/python -m pytest -q "${marker[@]}" "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: treating as failure" >&2
  exit 1
fi
exit $rc
