"""10^9 training rows on paper (issue 21, item 6), computed with `datablame plan`'s arithmetic.

The model is TinyLlama-1.1B's shape (22 layers, hidden 2048, intermediate 5632, 32 heads, 4 KV
heads, vocabulary 32000), built on the meta device; rows are 512 tokens; features are the MLP
preset (gate/up/down of every layer, 66 modules) at three projections. GPU throughput is
`datablame.plan.costs.GPU_ASSUMPTION` (stated, not measured). Writes
benchmarks/results/scale_paper.json, which docs/scale.md quotes.

    .venv/bin/python benchmarks/scale_paper.py
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from datablame.config import ModelConfig, ModuleSelection, ProjectionConfig  # noqa: E402
from datablame.plan.calibrate import assumed_gpu  # noqa: E402
from datablame.plan.costs import (  # noqa: E402
    GPU_ASSUMPTION,
    Workload,
    default_nlist,
    flops_per_token,
    pq_m,
    store_disk_bytes,
)
from datablame.plan.planner import to_shape  # noqa: E402
from datablame.plan.shapes import model_shape  # noqa: E402

ROWS = 10**9
TOKENS = 512
SHARD_ROWS = 65_536
GPUS = (8, 64, 512)
INDEX_SHARDS = 16  # IVF-PQ shards a query fans out to (one per serving node)


def main() -> dict:
    tiny_llama = ModelConfig(kind="tiny", tiny={"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
                                                "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000,
                                                "max_position_embeddings": 2048})
    ms = model_shape(tiny_llama, ModuleSelection(pattern=r"mlp\.(gate_proj|up_proj|down_proj)$"), vocab_size=32000)
    out: dict = {"model": {**ms.as_dict(), "name": "TinyLlama-1.1B shape (random weights)"}, "rows": ROWS,
                 "tokens_per_row": TOKENS, "gpu_assumption": GPU_ASSUMPTION, "shard_rows": SHARD_ROWS, "projections": []}
    for k in (32, 16, 8):
        proj = ProjectionConfig(k_in=k, k_out=k)
        s = to_shape(ms, proj)
        w = Workload(rows=ROWS, shard_rows=SHARD_ROWS, faiss="ivfpq", id_bytes=10)
        disk = store_disk_bytes(s, w)
        nlist = default_nlist(ROWS)
        m = pq_m(s.dim)
        cal = assumed_gpu(s, dtype="bfloat16", tokens=TOKENS, startup_s=0.0, prep_s=0.0)
        row_s = TOKENS * cal.feat_s_per_token  # one GPU, one row
        out["projections"].append({
            "k_in": k, "k_out": k, "dim": s.dim,
            "store_bytes": disk["shards"] + disk["norms"] + disk["row_losses"] + disk["row_ids"],
            "store_bytes_per_row": (disk["shards"] + disk["norms"] + disk["row_losses"] + disk["row_ids"]) / ROWS,
            "shards": math.ceil(ROWS / SHARD_ROWS), "shard_bytes": SHARD_ROWS * s.dim * 2,
            "ivf_flat_ram_bytes": ROWS * (s.dim * 4 + 8) + nlist * s.dim * 4,
            "ivfpq_ram_bytes": ROWS * (m + 8) + nlist * s.dim * 4, "nlist": nlist, "m_pq": m,
            "featurize_flops_per_token": flops_per_token(s, TOKENS, "featurize"),
            "featurize_gpu_seconds": ROWS * row_s,
            "featurize_hours_on": {str(n): ROWS * row_s / n / 3600 for n in GPUS},
            "exact_query_bytes_read": ROWS * s.dim * 2,
            "exact_query_s_at_hbm": ROWS * s.dim * 2 / (GPU_ASSUMPTION["hbm_gb_per_s"] * 1e9),
            "fanout": {"index_shards": INDEX_SHARDS, "rows_per_shard": ROWS // INDEX_SHARDS,
                       "ivfpq_ram_per_shard_bytes": (ROWS // INDEX_SHARDS) * (m + 8) + nlist * s.dim * 4,
                       "rescore_bytes_per_query": 200 * INDEX_SHARDS * s.dim * 2},
        })
    path = HERE / "results" / "scale_paper.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    for p in out["projections"]:
        print(f"{p['k_in']}x{p['k_out']}: dim {p['dim']}, store {p['store_bytes'] / 1e12:.1f} TB, IVF-PQ "
              f"{p['ivfpq_ram_bytes'] / 1e9:.0f} GB, IVF-Flat {p['ivf_flat_ram_bytes'] / 1e12:.1f} TB, featurize "
              f"{p['featurize_gpu_seconds'] / 3600:.0f} GPU-h ({', '.join(f'{n} GPUs {h:.1f} h' for n, h in p['featurize_hours_on'].items())})")
    return out


if __name__ == "__main__":
    main()
