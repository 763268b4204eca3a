"""`datablame diff`: find a rare behaviour that fine-tuning introduced, measure it, blame it.

- `sampling`: logit diff amplification, logits = after + alpha * (after - before), with a KV
  cache for both models (`sample_texts`, `sample_token_ids`, `SamplingSettings`, `ModelPair`);
- `pair`: load the two models (two checkpoints / models, or a base + PEFT adapter);
- `classify`: label samples by keyword / regex rules or a judge model (`make_classifier`);
- `rates`: behaviour rates with Wilson 95 % intervals and the rate-vs-alpha chart;
- `scan`: every (prompt, alpha) cell sampled, labelled and saved, resumable (`run_scan`);
- `blame`: the surfaced samples as queries, scored by methods over a BM25 pool, with agreement;
- `patching`: per method its top-K rows removed and the after-model LoRA-fine-tuned, against a
  no-removal and a random-removal control, seeds per arm, rescanned; verdicts (`run_patch_jobs`,
  `compare_arms`);
- `final`: the 4-panel `final_results.png`, `final_results.json` and `case_study.md`;
- `demo`: a tiny offline before/after pair with a planted rare behaviour and its ground truth.
"""

from datablame.diff.blame import (
    BlameResult,
    blame_surfaced,
    bm25_pool,
    surfaced_queries,
    with_queries,
)
from datablame.diff.classify import ClassifierSettings, Label, make_classifier
from datablame.diff.demo import DiffDemo, build_diff_demo, demo_context
from datablame.diff.final import write_final
from datablame.diff.pair import load_pair
from datablame.diff.patching import (
    PatchJob,
    PatchRunner,
    compare_arms,
    newcombe_interval,
    plan_jobs,
    run_patch_jobs,
)
from datablame.diff.rates import plot_rates, pooled_rates, rate_summary, wilson_interval
from datablame.diff.sampling import (
    ModelPair,
    SamplingSettings,
    amplified_logits,
    sample_texts,
    sample_token_ids,
)
from datablame.diff.scan import ScanPrompt, ScanSettings, load_prompts, run_scan

__all__ = [
    "BlameResult", "ClassifierSettings", "DiffDemo", "Label", "ModelPair", "PatchJob", "PatchRunner",
    "SamplingSettings", "ScanPrompt", "ScanSettings", "amplified_logits", "blame_surfaced", "bm25_pool",
    "build_diff_demo", "compare_arms", "demo_context", "load_pair", "load_prompts", "make_classifier",
    "newcombe_interval", "plan_jobs", "plot_rates", "pooled_rates", "rate_summary", "run_patch_jobs", "run_scan",
    "sample_texts", "sample_token_ids", "surfaced_queries", "wilson_interval", "with_queries", "write_final",
]
