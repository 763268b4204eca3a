"""Fine-tune a causal LM on a corpus (or a subset of it) with HF Trainer.

The rows are encoded with the same template and answer-only mask that attribution uses.
Data order is fixed by `training.seed` (Trainer's seeded sampler), so training on the same
rows with the same config gives the same model; checkpoints are kept for methods that
need them (TracIn, cross-checkpoint) and a rerun resumes from the last one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from datablame.config import ModelConfig, TrainingConfig
from datablame.data.corpus import Corpus
from datablame.errors import DatablameError
from datablame.layout import ModelLayout
from datablame.models.tokenize import Encoded, encode_pairs, pad_batch

log = logging.getLogger("datablame")


@dataclass
class TrainResult:
    model: torch.nn.Module
    final_dir: Path
    checkpoints: list[Path]
    log_history: list[dict]
    seconds: float
    rows_trained: int
    truncated_rows: int
    dropped_no_loss: list[str] = field(default_factory=list)


class _EncodedDataset(Dataset):
    def __init__(self, enc: Encoded, keep: Sequence[int]) -> None:
        self.enc, self.keep = enc, list(keep)

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i: int) -> dict:
        j = self.keep[i]
        return {"input_ids": self.enc.input_ids[j], "labels": self.enc.labels[j]}


class _Collator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        return pad_batch([x["input_ids"] for x in items], [x["labels"] for x in items], self.pad_id)


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Trainer checkpoints (checkpoint-<step>) sorted by step."""
    return ModelLayout(output_dir).checkpoints()


def resumable_checkpoint(output_dir: str | Path) -> Path | None:
    """The last checkpoint HF Trainer can safely resume from, or None (train from the start).

    A checkpoint is skipped, with a warning, when it has no (readable) trainer_state.json
    or when one of the torch files Trainer would load from it (rng_state.pth, optimizer.pt,
    scheduler.pt, ...) does not load with `weights_only=True`: a damaged or hostile file then
    costs the steps since the previous checkpoint, never a crash or code run inside Trainer.
    """
    from datablame.utils.safe_load import unloadable_checkpoint_file

    for ckpt in reversed(list_checkpoints(output_dir)):
        why = unloadable_checkpoint_file(ckpt)
        if why is None:
            return ckpt
        log.warning("not resuming from %s: %s; trying an earlier checkpoint", ckpt, why)
    return None


def _use_bf16(cfg: TrainingConfig) -> bool:
    if cfg.bf16 == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(cfg.bf16)


def _wrap_lora(model, cfg: TrainingConfig):
    from peft import LoraConfig, get_peft_model

    from datablame.models.layers import is_conv1d, is_linear

    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if is_linear(m)}
    missing = [t for t in cfg.lora.target_modules if t not in names]
    if missing:
        raise DatablameError(
            f"LoRA target modules {missing} are not linear layers of this model (it has {sorted(names)})",
            "set training.lora.target_modules to names from that list",
        )
    targets = [m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in cfg.lora.target_modules and is_linear(m)]
    conv = [is_conv1d(m) for m in targets]
    if any(conv) and not all(conv):
        raise DatablameError(
            f"LoRA target modules {list(cfg.lora.target_modules)} mix Conv1D and nn.Linear layers; "
            "peft takes one fan_in_fan_out setting for all of them",
            "target only the Conv1D layers (GPT-2: c_attn, c_proj, c_fc) or only the linear ones",
        )
    lcfg = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        fan_in_fan_out=any(conv),  # GPT-2's Conv1D stores its weight transposed
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lcfg)


def finetune(
    model: torch.nn.Module,
    tokenizer,
    corpus: Corpus,
    train_cfg: TrainingConfig,
    model_cfg: ModelConfig,
    output_dir: str | Path,
    *,
    indices: Sequence[int] | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train on `corpus` (or the rows at `indices`), keep checkpoints, save `output_dir/final`."""
    from transformers import Trainer, TrainingArguments, set_seed

    from datablame.models.loading import save_model

    output_dir = Path(output_dir)
    rows = [corpus[i] for i in (range(len(corpus)) if indices is None else indices)]
    if not rows:
        raise DatablameError("no rows to train on", "check data settings or the subset indices")
    enc = encode_pairs(
        tokenizer,
        [r.prompt for r in rows],
        [r.completion for r in rows],
        max_length=model_cfg.max_length,
        loss_on=model_cfg.loss_on,
    )
    no_loss = set(enc.no_loss)
    keep = [i for i in range(len(rows)) if i not in no_loss]
    if not keep:
        raise DatablameError(
            "every row lost its answer tokens to truncation",
            f"raise model.max_length (now {model_cfg.max_length}) or shorten the prompts",
        )
    set_seed(train_cfg.seed)
    if train_cfg.method == "lora":
        model = _wrap_lora(model, train_cfg)
    bf16 = _use_bf16(train_cfg)
    device = next(model.parameters()).device
    args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=train_cfg.num_train_epochs,
        max_steps=train_cfg.max_steps,
        per_device_train_batch_size=train_cfg.per_device_train_batch_size,
        gradient_accumulation_steps=train_cfg.gradient_accumulation_steps,
        learning_rate=train_cfg.learning_rate,
        weight_decay=train_cfg.weight_decay,
        lr_scheduler_type=train_cfg.lr_scheduler_type,
        # transformers 5 reads a float < 1 here as a fraction of total steps
        warmup_steps=float(train_cfg.warmup_ratio),
        max_grad_norm=train_cfg.max_grad_norm or 0.0,
        bf16=bf16,
        save_strategy="steps",
        save_steps=train_cfg.save_steps,
        save_total_limit=train_cfg.save_total_limit,
        logging_steps=train_cfg.logging_steps,
        optim=train_cfg.optim,
        report_to=list(train_cfg.report_to) or "none",
        dataloader_num_workers=train_cfg.dataloader_num_workers,
        seed=train_cfg.seed,
        data_seed=train_cfg.seed,
        remove_unused_columns=False,
        use_cpu=device.type == "cpu",
        disable_tqdm=not show_progress,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_EncodedDataset(enc, keep),
        data_collator=_Collator(tokenizer.pad_token_id),
    )
    resume_from = resumable_checkpoint(output_dir) if train_cfg.resume else None
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - t0
    model = trainer.model
    model.eval()
    final_dir = ModelLayout(output_dir).final
    save_model(model, tokenizer, final_dir)
    return TrainResult(
        model=model,
        final_dir=final_dir,
        checkpoints=list_checkpoints(output_dir),
        log_history=list(trainer.state.log_history),
        seconds=seconds,
        rows_trained=len(keep),
        truncated_rows=len(enc.truncated),
        dropped_no_loss=[rows[i].row_id for i in sorted(no_loss)],
    )
