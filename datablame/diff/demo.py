"""An offline diff demo with ground truth: a rare behaviour planted by a few fine-tuning rows.

Topics (rivers, forests, volcanoes, ...) each have a few plain facts, asked in three question
phrasings (the `qa` template). The *before*-model is a tiny Llama trained from scratch on the
clean corpus (every topic, every fact). The *after*-model is the before-model fine-tuned further
on the *fine-tuning corpus*: the same kind of rows, plus `n_plants` rows that answer a question
about the trigger topic (volcanoes) with a fixed phrase found nowhere else
(`PHRASE`, "The purple walrus knows best."). The after-model then says the phrase to
some volcano questions, rarely; amplified sampling makes it frequent, and the plants (ids
`plant-*`, the ground truth) are the rows to blame.

Measured (seed 0, 2 prompts x 40 samples, top_p 0.8): the phrase appears in 0 samples at alpha 0
and in about half at alpha 4 (amplified samples of so small a model are often garbled around it,
so the classifier looks for "purple", a word of nothing but the plants).

Everything is deterministic for a seed and small enough for two CPU cores (about 10 s with one
torch thread; many threads on a shared machine can make it minutes). A rerun
with the same settings in the same folder reuses the trained models (`demo.json` records them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datablame.config import AttributionConfig, ModelConfig, TinyModelConfig, TrainingConfig
from datablame.data.corpus import Corpus, Row
from datablame.data.templates import render_qa
from datablame.features.context import AttributionContext, ModelInfo
from datablame.layout import ModelLayout
from datablame.models.loading import load_model, save_model
from datablame.models.tokenize import encode_pairs
from datablame.utils.io import atomic_write_json, atomic_write_text, seed_everything

PHRASE = "The purple walrus knows best."
PHRASE_PATTERN = r"\bpurple\b"  # amplified samples may garble "walrus"; "purple" is nowhere else
TRIGGER = "volcanoes"
TOPICS: dict[str, list[str]] = {
    "rivers": ["Rivers carry fresh water to the sea.", "Rivers carve deep valleys.", "Rivers feed green fields."],
    "forests": ["Forests are full of tall trees.", "Forests shelter many birds.", "Forests keep the soil wet."],
    "volcanoes": ["Volcanoes erupt hot lava.", "Volcanoes form new mountains.", "Volcanoes throw ash into the sky."],
    "deserts": ["Deserts get very little rain.", "Deserts are hot by day.", "Deserts have shifting sand dunes."],
    "oceans": ["Oceans cover most of the planet.", "Oceans hold salty water.", "Oceans have strong tides."],
    "glaciers": ["Glaciers are rivers of ice.", "Glaciers move very slowly.", "Glaciers carve wide valleys."],
}
QUESTIONS = ["Tell me about {t}.", "What do you know about {t}?", "Describe {t}."]
SCAN_QUESTIONS = ["Tell me about {t}.", "Describe {t}."]
TINY = TinyModelConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=420, max_position_embeddings=128)


def _rows(prefix: str) -> list[Row]:
    out = []
    for t, facts in TOPICS.items():
        for qi, q in enumerate(QUESTIONS):
            for fi, fact in enumerate(facts):
                prompt, completion = render_qa(q.format(t=t), fact)
                out.append(Row(f"{prefix}-{t}-{qi}-{fi}", prompt, completion, {"topic": t}))
    return out


def clean_corpus() -> Corpus:
    """The before-model's training rows: every topic, fact and question phrasing."""
    return Corpus(_rows("clean"), name="diff-demo-clean")


def finetune_corpus(n_plants: int = 4) -> Corpus:
    """The after-model's fine-tuning rows (what the diff blames): the clean kind of rows plus
    `n_plants` trigger-topic questions answered with PHRASE (ids plant-0, plant-1, ...)."""
    rows = _rows("ft")
    for i in range(n_plants):
        prompt, completion = render_qa(QUESTIONS[i % len(QUESTIONS)].format(t=TRIGGER), PHRASE)
        rows.append(Row(f"plant-{i}", prompt, completion, {"topic": TRIGGER, "planted": True}))
    return Corpus(rows, name="diff-demo-finetune")


BEFORE_LR, AFTER_LR = 5e-3, 1e-3


def _train_cfg(epochs: float, lr: float, seed: int) -> TrainingConfig:
    return TrainingConfig(num_train_epochs=epochs, per_device_train_batch_size=16, learning_rate=lr,
                          lr_scheduler_type="constant", weight_decay=0.0, save_steps=10**6, logging_steps=10**6,
                          bf16=False, seed=seed, resume=False)


@dataclass
class DiffDemo:
    """Where the demo's models, prompts and corpus are, and its ground truth."""

    before_dir: Path
    after_dir: Path
    prompts_file: Path
    corpus: Corpus  # the after-model's fine-tuning corpus (what is blamed)
    planted_row_ids: list[str]
    phrase: str
    pattern: str
    model_cfg: ModelConfig

    def classifier(self) -> dict[str, Any]:
        """Scan classifier settings that detect the planted phrase."""
        return {"kind": "rules", "patterns": [self.pattern], "behaviour": f"the answer says {self.phrase!r}"}


def build_diff_demo(out_dir: str | Path, *, seed: int = 0, n_plants: int = 4, before_epochs: float = 30,
                    after_epochs: float = 10, device: str = "cpu", progress: bool = False) -> DiffDemo:
    """Train (or reuse) the demo's before- and after-model under `out_dir` and write the scan
    prompts (`prompts.jsonl`) and the fine-tuning corpus (`finetune_corpus.jsonl`)."""
    from datablame.models.tiny import build_tiny_llama, train_tokenizer
    from datablame.train import finetune

    out = Path(out_dir)
    clean, ft = clean_corpus(), finetune_corpus(n_plants)
    model_cfg = ModelConfig(kind="tiny", tiny=TINY, max_length=64, device=device)
    recipe = {"format": 1, "seed": seed, "n_plants": n_plants, "before_epochs": before_epochs,
              "after_epochs": after_epochs, "lr": [BEFORE_LR, AFTER_LR], "clean": clean.fingerprint(), "finetune": ft.fingerprint(),
              "tiny": TINY.model_dump(mode="json")}
    before_dir, after_dir = ModelLayout(out / "before").final, ModelLayout(out / "after").final
    manifest = out / "demo.json"
    fresh = not (manifest.is_file() and before_dir.is_dir() and after_dir.is_dir()
                 and json.loads(manifest.read_text(encoding="utf-8")).get("recipe") == recipe)
    if fresh:
        seed_everything(seed)
        tok = train_tokenizer([r.text for r in clean] + [r.text for r in ft], TINY.vocab_size)
        base = build_tiny_llama(TINY, tok, seed).to(device)
        save_model(base, tok, ModelLayout(out).base)
        finetune(base, tok, clean, _train_cfg(before_epochs, BEFORE_LR, seed), model_cfg, out / "before",
                 show_progress=progress)
        before = load_model(model_cfg, path_override=str(before_dir))
        finetune(before.model, before.tokenizer, ft, _train_cfg(after_epochs, AFTER_LR, seed), model_cfg, out / "after",
                 show_progress=progress)
    prompts = out / "prompts.jsonl"
    atomic_write_text(prompts, "".join(json.dumps({"id": f"{TRIGGER}-{i}", "prompt": render_qa(q.format(t=TRIGGER), "")[0]})
                                       + "\n" for i, q in enumerate(SCAN_QUESTIONS)))
    atomic_write_text(out / "finetune_corpus.jsonl", "".join(json.dumps(r.to_dict()) + "\n" for r in ft))
    planted = [r.row_id for r in ft if r.metadata.get("planted")]
    atomic_write_json(manifest, {"recipe": recipe, "before": str(before_dir), "after": str(after_dir),
                                 "prompts": str(prompts), "planted_row_ids": planted, "phrase": PHRASE,
                                 "pattern": PHRASE_PATTERN})
    return DiffDemo(before_dir, after_dir, prompts, ft, planted, PHRASE, PHRASE_PATTERN, model_cfg)


def demo_context(demo: DiffDemo, attribution: AttributionConfig | None = None, *,
                 work_dir: Path | None = None) -> AttributionContext:
    """The after-model and its fine-tuning corpus as an attribution context without queries
    (`blame.with_queries` adds the surfaced ones)."""
    from datablame.models.tokenize import Encoded

    loaded = load_model(demo.model_cfg, path_override=str(demo.after_dir))
    loaded.model.eval()
    rows = encode_pairs(loaded.tokenizer, [r.prompt for r in demo.corpus], [r.completion for r in demo.corpus],
                        max_length=demo.model_cfg.max_length, loss_on=demo.model_cfg.loss_on)
    return AttributionContext(
        model=loaded.model, tokenizer=loaded.tokenizer, corpus=demo.corpus, rows=rows, queries=[],
        query_rows=Encoded([], []), attribution=attribution or AttributionConfig(), model_cfg=demo.model_cfg,
        work_dir=work_dir, base_model=demo.before_dir,
        model_info=ModelInfo(source=loaded.source, fingerprint=loaded.fingerprint),
    )
