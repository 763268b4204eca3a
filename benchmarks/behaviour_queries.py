"""Behaviour-level queries on paraphrased plants (issue 16 item 2): recall@10 and mAP of the
planted rows when a query is measured as its one completion string, as the behaviour (the
claim restated in the five ways a user might list them: mean log-likelihood), and as the
behaviour against a contrast (the same sentence naming another fact's person: a margin).

The paraphrase variant trains each fact on plants that restate the claim with other words and
word order, never the query's own sentence. For the exact query string a paraphrase is a
competing answer, so gradient methods rank the plants low; the claim, measured over its
restatements, should turn them into support.

    .venv/bin/python benchmarks/behaviour_queries.py   # -> benchmarks/results/behaviour_queries.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

METHODS = ("grad_cosine", "ekfac", "trak", "grad_dot", "bm25")
PLANTED = {"n_entities": 48, "n_facts": 16, "plants_per_fact": 4, "decoys_per_fact": 2,
           "background_per_entity": 8, "poison_facts": 0}


def _config(out: Path):
    from datablame import api
    from datablame.config import parse_config

    raw = api.bench_config("planted", out, size="small", variant="paraphrase").model_dump(mode="json")
    raw["data"]["planted"] = {**raw["data"]["planted"], **PLANTED}
    raw["model"]["tiny"] = {**raw["model"]["tiny"], "hidden_size": 64, "intermediate_size": 160}
    raw["training"]["num_train_epochs"] = 20
    return parse_config(raw, source="<behaviour_queries>")


def _query_sets(queries):
    """(name, queries) per measurement: the string, the behaviour, the behaviour vs a contrast."""
    from datablame.data.synthetic.planted_variants import PARAPHRASE_ANSWERS

    behaviour, contrast = [], []
    for i, q in enumerate(queries):
        m = q.metadata
        fill = {"o": m["object"], "e": m["entity"], "a": m["answer"]}
        said = tuple(" " + t.format(**fill) for t in PARAPHRASE_ANSWERS[m["frame"]])
        other = queries[(i + 1) % len(queries)].metadata["answer"]
        behaviour.append(dataclasses.replace(q, behaviour=said))
        contrast.append(dataclasses.replace(q, behaviour=said,
                                            contrast=tuple(t.replace(m["answer"], other) for t in said)))
    return [("string", list(queries)), ("behaviour", behaviour), ("behaviour_vs_contrast", contrast)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/behaviour-queries")
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args()
    from datablame import api
    from datablame.methods import run_method
    from datablame.metrics import query_metrics, summarize
    from datablame.models.queries import behaviour_measure, context_limit, prepare_queries

    t0 = time.perf_counter()
    cfg = _config(Path(args.out))
    api.train(cfg)
    ctx, truth = api.prepare_inputs(cfg)
    keep = [i for i, q in enumerate(ctx.queries) if q.metadata.get("group") == "planted"]
    base = [ctx.queries[i] for i in keep]
    row_index = {r.row_id: j for j, r in enumerate(ctx.corpus)}
    relevant = [[row_index[r] for r in truth[q.query_id]] for q in base]
    out: dict = {"rows": len(ctx.corpus), "queries": len(base), "planted": PLANTED, "results": {}}
    for name, queries in _query_sets(base):
        prepared, enc = prepare_queries(ctx.model, ctx.tokenizer, queries, max_length=cfg.model.max_length,
                                        max_new_tokens=8)
        measure = behaviour_measure(ctx.tokenizer, prepared, limit=context_limit(ctx.model, cfg.model.max_length))
        asked = dataclasses.replace(ctx, queries=prepared, query_rows=enc, query_measure=measure,
                                    generated=[False] * len(prepared), shared=ctx.shared.for_new_queries())
        for method in args.methods.split(","):
            run = run_method(asked, method)
            per_query = [query_metrics(run.scores[qi], rel, ks=(10,)) for qi, rel in enumerate(relevant)]
            ranks = [float(np.median([int((run.scores[qi] > run.scores[qi, r]).sum()) + 1 for r in rel]))
                     for qi, rel in enumerate(relevant)]
            summary = summarize(per_query)
            out["results"].setdefault(method, {})[name] = {
                "recall@10": summary["recall@10"], "mAP": summary["ap"],
                "median_plant_rank": float(np.median(ranks)), "seconds": round(run.seconds, 2)}
            print(f"{method:12s} {name:22s} recall@10 {summary['recall@10']['mean']:.3f} "
                  f"mAP {summary['ap']['mean']:.3f} median plant rank {np.median(ranks):.0f}", flush=True)
    out.update(seconds=round(time.perf_counter() - t0, 1), cores=os.cpu_count(), load=os.getloadavg(),
               note="wall times are upper bounds: the machine's cores were shared with other work")
    path = RESULTS / "behaviour_queries.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
