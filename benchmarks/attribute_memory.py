"""Peak memory of scoring queries against a feature store: the old whole-store path vs the
blocked path `attribute` now uses.

Builds synthetic stores (`datablame.store.build_store`, random fp16-able features) of 50k and
200k rows with the default feature dimension: 32 x 32 per module (the default projection) times
the modules the default selection picks in the default tiny model (MLP gate/up/down of each
layer). Each measurement runs in a fresh subprocess that loads that model (so its memory is
counted as in `attribute`), opens the store with hash verification (cached, as `attribute`
does), scores `--queries` random query features by gradient cosine and reports its peak RSS
(VmHWM of /proc/self/status, which counts the memory-mapped shard pages it touched):

- before: `FeatureStore.load_all(float32)` and the float64 copy of the old `grad_dot`
          (`queries.double() @ rows.double().T`; the old `grad_cosine` made a second float64
          copy on top). Skipped when the machine has not enough free memory for it.
- after:  `StoreRows` + `dot_scores` (what grad_dot / grad_cosine / tracin call): blocks of
          ~64 MiB of float64 read from the memory-mapped fp16 shards.

Both paths give the same scores (checked on a sample of rows). Writes
benchmarks/results/attribute_memory.json.

    .venv/bin/python benchmarks/attribute_memory.py               # ~3-5 min on 2 cores
    .venv/bin/python benchmarks/attribute_memory.py --rows 20000  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "attribute_memory.json"


def _vm(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def default_model():
    """The default tiny model (random weights) and the feature dim of the default selection."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from datablame.config import AttributionConfig, TinyModelConfig
    from datablame.grads import select_modules

    t = TinyModelConfig()
    cfg = LlamaConfig(hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                      num_hidden_layers=t.num_hidden_layers, num_attention_heads=t.num_attention_heads,
                      num_key_value_heads=t.num_key_value_heads, vocab_size=t.vocab_size,
                      max_position_embeddings=t.max_position_embeddings)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    att = AttributionConfig()
    modules = select_modules(model, att.modules)
    k = (att.projection.k_out or 0) * (att.projection.k_in or 0)
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return model, len(modules) * k, nbytes, len(modules)


def build(path: Path, rows: int, dim: int) -> int:
    from datablame.store import build_store

    block = np.random.default_rng(0).standard_normal((4096, dim)).astype(np.float32)

    def featurize(a: int, b: int) -> np.ndarray:  # cheap: a fixed random block, shifted per call
        return np.roll(block, a % 4096, axis=0)[: b - a]

    info = build_store(path, n_rows=rows, row_ids=[f"r{i}" for i in range(rows)], identity={"bench": rows},
                       featurize=featurize, dim=dim, shard_size=4096, progress=False)
    return info.nbytes


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process; prints a JSON line."""
    from datablame.store import open_store
    from datablame.store.reader import readonly_tensor
    from datablame.store.rows import StoreRows, dot_scores

    rss0 = _vm("VmRSS")
    model, dim, model_bytes, _ = default_model()
    rss_model = _vm("VmRSS")
    t0 = time.perf_counter()
    store = open_store(args.store, verify="cached")
    q = torch.randn(args.queries, store.dim, generator=torch.Generator().manual_seed(1))
    if args.child == "before":
        rows = torch.from_numpy(store.load_all(np.float32))
        scores = (q.double() @ rows.double().T).numpy()
    else:
        scores = dot_scores(q, StoreRows(store))
    seconds = time.perf_counter() - t0
    sample = np.arange(0, store.n_rows, max(1, store.n_rows // 64))
    _, arr, _ = next(store.iter_shards())
    check = (q.double() @ readonly_tensor(arr[: min(64, len(arr))]).double().T).numpy()
    ok = bool(np.allclose(scores[:, : check.shape[1]], check, rtol=1e-12, atol=1e-12))
    print(json.dumps({"path": args.child, "peak_rss": _vm("VmHWM"), "rss_at_start": rss0, "rss_after_model": rss_model,
                      "model_bytes": model_bytes, "seconds": seconds, "scores_shape": list(scores.shape),
                      "score_checksum": float(scores[:, sample].sum()), "first_rows_match": ok}))
    del model


def measure(store: Path, path: str, queries: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", path, "--store", str(store), "--queries", str(queries)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{path} measurement failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[50_000, 200_000])
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--workdir", type=Path, default=None, help="where stores are built (default: a temp dir, removed)")
    ap.add_argument("--child", choices=["before", "after"], help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    _, dim, model_bytes, n_modules = default_model()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="attribute-memory-"))
    results = []
    try:
        for rows in args.rows:
            path = work / f"store-{rows}"
            t0 = time.perf_counter()
            store_bytes = build(path, rows, dim)
            build_s = time.perf_counter() - t0
            entry = {"rows": rows, "dim": dim, "store_bytes_on_disk": store_bytes, "build_seconds": build_s}
            entry["after"] = measure(path, "after", args.queries)
            # old path: fp32 copy (2x store) + float64 copy (4x) + mapped pages (1x), plus the model
            need = 7 * store_bytes + model_bytes + (1 << 30)
            if _mem_available() > need:
                entry["before"] = measure(path, "before", args.queries)
                b, a = entry["before"], entry["after"]
                entry["scores_identical"] = b["score_checksum"] == a["score_checksum"]
                entry["peak_rss_ratio_before_over_after"] = b["peak_rss"] / a["peak_rss"]
            else:
                entry["before"] = {"skipped": f"needs ~{need / 2**30:.1f} GiB, {_mem_available() / 2**30:.1f} GiB available"}
            for key in ("before", "after"):
                if "peak_rss" in entry[key]:
                    entry[key]["peak_rss_over_store_plus_model"] = entry[key]["peak_rss"] / (store_bytes + model_bytes)
                    # what scoring added on top of the interpreter, torch, transformers and the model
                    entry[key]["peak_rss_minus_rss_after_model"] = entry[key]["peak_rss"] - entry[key]["rss_after_model"]
            results.append(entry)
            print(json.dumps(entry, indent=1), flush=True)
            shutil.rmtree(path)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    at50 = next((e for e in results if e["rows"] == 50_000), None)
    C.write_json(RESULTS, {
        "benchmark": "attribute_memory",
        "date": C.now(),
        "machine": C.machine(torch.device("cpu")),
        "cpu_count": os.cpu_count(),
        "feature_dim": dim, "modules": n_modules, "model_bytes": model_bytes, "queries": args.queries,
        "what": "peak RSS (VmHWM) of a fresh process that loads the default tiny model, opens the store (cached "
                "hash verification) and scores the queries by dot product: before = load_all fp32 + float64 copy "
                "(old grad_dot; old grad_cosine made one more float64 copy), after = StoreRows + dot_scores blocks",
        "target": "peak RSS at 50k rows <= 2 x (store bytes on disk) + model bytes",
        "target_met_at_50k": None if at50 is None else at50["after"]["peak_rss"] <= 2 * at50["store_bytes_on_disk"] + model_bytes,
        "results": results,
    })
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
