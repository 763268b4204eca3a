#!/usr/bin/env bash
# GPU readiness in one script (issue 21, item 7). On a CUDA machine:
#   1. benchmarks/featurize.py --device cuda: the TinyLlama-1.1B shape (22 layers, hidden 2048,
#      512 tokens, bf16, random weights): our featurizer vs bergson vs a training step, and the
#      roofline fraction (-> benchmarks/results/featurize_cuda.json); then
#      benchmarks/featurize_checkpointing.py: peak memory and time with vs without gradient
#      checkpointing at that shape (-> featurize_checkpointing_gpu.json; on CPU its CPU shape);
#   2. the CUDA store tests (pytest -k cuda: exact top-k on the GPU against the CPU, CUDA device
#      resolution);
#   3. a 2-rank torchrun smoke test (benchmarks/dist_smoke.py): NCCL with >= 2 GPUs, else gloo
#      (said so), then the 2-rank distributed `index` test (gloo, store equal to 1 process).
# Without CUDA it runs the CPU parts (2, whose CUDA tests then skip, and 3 with gloo) and says
# what it skipped. Every part's status, time and note go to benchmarks/results/gpu_suite_<device>.json.
#
#   bash benchmarks/gpu_suite.sh                 # here (CPU) or on the GPU machine, unchanged
#   PYTHON=python3 bash benchmarks/gpu_suite.sh  # another interpreter (default: .venv/bin/python, else python3)
#   FEATURIZE_CPU=1 bash benchmarks/gpu_suite.sh # also the CPU featurize benchmark (~5 min on 2 cores)
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
RES=benchmarks/results
mkdir -p "$RES"
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null || echo 0)
DEVICE=$([ "$GPUS" -gt 0 ] && echo cuda || echo cpu)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PARTS="$TMP/parts.jsonl"
: >"$PARTS"
echo "gpu_suite: $DEVICE ($GPUS GPUs), python $PY"

# part NAME STATUS SECONDS NOTE [RESULT_FILE]
part() {
  "$PY" - "$@" >>"$PARTS" <<'PYEOF'
import json, sys
name, status, secs, note = sys.argv[1:5]
print(json.dumps({"part": name, "status": status, "seconds": float(secs), "note": note,
                  "result": sys.argv[5] if len(sys.argv) > 5 else None}))
PYEOF
  echo "  [$2] $1 (${3}s): $4"
}

run_part() {  # run_part NAME RESULT_FILE NOTE CMD...
  local name=$1 result=$2 note=$3
  shift 3
  local t0=$SECONDS log="$TMP/$name.log"
  if "$@" >"$log" 2>&1; then
    part "$name" ran $((SECONDS - t0)) "$note" "$result"
  else
    part "$name" failed $((SECONDS - t0)) "$note; exit $?; log tail: $(tail -c 400 "$log" | tr '\n"' ' ')" "$result"
  fi
  tail -n 15 "$log" | sed 's/^/    /'
}

# 1. featurize benchmark
if [ "$DEVICE" = cuda ]; then
  BERGSON=$("$PY" -c "import bergson" >/dev/null 2>&1 && echo "" || echo "--no-bergson")
  run_part featurize_tinyllama "$RES/featurize_cuda.json" \
    "TinyLlama-1.1B shape, 512 tokens, bf16: ours vs ${BERGSON:+no }bergson vs a training step, roofline fraction" \
    "$PY" benchmarks/featurize.py --device cuda $BERGSON --no-profile --out "$RES/featurize_cuda.json"
elif [ "${FEATURIZE_CPU:-0}" = 1 ]; then
  run_part featurize_cpu "$RES/featurize_cpu.json" "CPU shape (benchmarks/featurize.py defaults)" \
    "$PY" benchmarks/featurize.py --device cpu --no-profile
else
  part featurize_tinyllama skipped 0 "no CUDA device: the TinyLlama-1.1B bf16 benchmark needs a GPU (FEATURIZE_CPU=1 runs the CPU shape)"
fi

# 1b. featurizing with gradient checkpointing: peak memory and time vs without (~40 s on 2 CPU cores)
CK_OUT="$RES/featurize_checkpointing$([ "$DEVICE" = cuda ] && echo _gpu).json"
run_part featurize_checkpointing "$CK_OUT" \
  "$([ "$DEVICE" = cuda ] && echo 'TinyLlama-1.1B shape, 512 tokens, bf16' || echo 'CPU shape'): peak memory and time with vs without checkpointing" \
  "$PY" benchmarks/featurize_checkpointing.py --device "$DEVICE" --out "$CK_OUT"

# 2. CUDA store tests (they skip themselves without a GPU)
run_part cuda_store_tests "" "pytest -k cuda on tests/store and tests/models/test_loading.py$([ "$DEVICE" = cpu ] && echo ': no CUDA, so the GPU tests report skipped')" \
  "$PY" -m pytest -q -rs -p no:cacheprovider tests/store/test_search.py tests/models/test_loading.py -k cuda

# 3. 2-rank torchrun smoke test + the distributed index test
if [ "$GPUS" -ge 2 ]; then BACKEND=nccl; NOTE="nccl on 2 GPUs"; else BACKEND=gloo; NOTE="gloo on CPU ($GPUS GPU(s): NCCL needs 2)"; fi
run_part torchrun_smoke "$RES/dist_smoke_$DEVICE.json" "2 ranks, $NOTE" \
  "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 benchmarks/dist_smoke.py --backend $BACKEND --out "$RES/dist_smoke_$DEVICE.json"
run_part distributed_index "" "datablame index --workers 2 (torchrun, gloo): store rows equal the 1-process store" \
  "$PY" -m pytest -q -p no:cacheprovider tests/store/test_distributed_index.py -k "torchrun_two_cpu_ranks"

"$PY" - "$PARTS" "$RES/gpu_suite_$DEVICE.json" "$DEVICE" "$GPUS" <<'PYEOF'
import datetime, json, os, platform, sys
parts = [json.loads(line) for line in open(sys.argv[1])]
out = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "device": sys.argv[3],
       "gpus": int(sys.argv[4]), "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
       "loadavg": os.getloadavg()}, "note": "wall seconds are upper bounds on a shared machine", "parts": parts}
try:
    import torch
    out["torch"] = torch.__version__
    if torch.cuda.is_available():
        out["gpu_name"] = torch.cuda.get_device_name(0)
except ImportError:
    pass
json.dump(out, open(sys.argv[2], "w"), indent=2)
print(f"wrote {sys.argv[2]}: " + ", ".join(f"{p['part']} {p['status']}" for p in parts))
sys.exit(1 if any(p["status"] == "failed" for p in parts) else 0)
PYEOF
