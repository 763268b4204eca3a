"""Fine-tune a causal LM on a corpus (or a subset of it) with HF Trainer.

The rows are encoded with the same template and answer-only mask that attribution uses.
Data order is fixed by `training.seed` (Trainer's seeded sampler), so training on the same
rows with the same config gives the same model; checkpoints are kept for methods that
need them (TracIn, cross-checkpoint) and a rerun resumes from the last one.

When only the training length changed (`num_train_epochs`, `max_steps`; `datablame.runs`
lets such a config reuse the run), training resumes from the last checkpoint within the new
total and checkpoints past it are set aside (`model/superseded/`). The lr schedule: Trainer
builds it for the new total and continues it at the checkpoint's step, so steps up to the
checkpoint followed the schedule of the old total and later steps the new one. A `constant`
schedule (or `constant_with_warmup` with the same warmup) does not depend on the total, so the
model equals one trained for the new length from the start; any other schedule gives a
mixed one (logged when resuming), and attribution's rebuilt schedule
(`features.checkpoints.checkpoint_schedule`) then notices the mismatch and uses the rates
training logged instead.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from datablame.config import ModelConfig, TrainingConfig
from datablame.data.corpus import Corpus
from datablame.errors import DatablameError
from datablame.layout import ModelLayout, checkpoint_step
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


def planned_steps(cfg: TrainingConfig, n_rows: int) -> int:
    """Optimizer steps Trainer takes on `n_rows` rows (one device): `max_steps`, else
    ceil(epochs x steps per epoch), a step being `gradient_accumulation_steps` batches."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = max(math.ceil(math.ceil(n_rows / cfg.per_device_train_batch_size) / cfg.gradient_accumulation_steps), 1)
    return math.ceil(cfg.num_train_epochs * per_epoch)


def _planned_total(ckpt: Path) -> int | None:
    """The total steps the training that saved `ckpt` was heading for (its trainer_state.json)."""
    try:
        total = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8")).get("max_steps")
    except (OSError, ValueError, AttributeError):
        return None
    return total if isinstance(total, int) and total > 0 else None


def _resume_note(ckpt: Path, total: int, cfg: TrainingConfig) -> str:
    """The log line saying where training resumes and why (and what a changed length does to the lr)."""
    step, old = checkpoint_step(ckpt), _planned_total(ckpt)
    if old is None or old == total:
        return f"resuming training from {ckpt.name} (step {step} of {total}): the last intact checkpoint"
    warm = [math.ceil(t * cfg.warmup_ratio) for t in (old, total)]
    same = cfg.lr_scheduler_type == "constant" or (cfg.lr_scheduler_type == "constant_with_warmup"
                                                    and warm[0] == warm[1])
    lr = (f"the {cfg.lr_scheduler_type} lr schedule does not depend on the total, so the model is the one "
          f"{total} steps from the start would give" if same else
          f"the {cfg.lr_scheduler_type} lr schedule depends on the total: steps 1-{step} followed it for {old} "
          f"steps, the rest follow it for {total}, so the model differs from one trained {total} steps from "
          "the start (for that, set output.overwrite: true or use a new output.dir)")
    return (f"resuming training from {ckpt.name} (step {step}), the last intact checkpoint within the new total "
            f"of {total} steps (it was saved by a training of {old} steps, same data, model and other "
            f"settings), instead of starting over; {lr}")


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def _eta_callback(probe: int = 5):
    """A Trainer callback that logs the optimizer steps before training and, after `probe`
    steps (the first, with its setup cost, not counted), the measured s/step and total time."""
    from transformers import TrainerCallback

    class _Eta(TrainerCallback):
        start, t1, said = 0, 0.0, False

        def on_train_begin(self, args, state, control, **kw):
            self.start = state.global_step
            at = f", resuming at step {state.global_step}" if state.global_step else ""
            log.info("training: %d optimizer steps in all%s (%d to go)", state.max_steps, at,
                     state.max_steps - state.global_step)

        def on_step_end(self, args, state, control, **kw):
            done = state.global_step - self.start
            if done == 1:
                self.t1 = time.perf_counter()
            elif done > 1 and not self.said and (done - 1 >= probe or state.global_step >= state.max_steps):
                self.said = True
                per = (time.perf_counter() - self.t1) / (done - 1)
                todo = state.max_steps - self.start
                log.info("training: %.3g s/step measured over %d steps; estimated %s for the %d steps of this "
                         "training, about %s left", per, done - 1, _duration(per * todo), todo,
                         _duration(per * (state.max_steps - state.global_step)))

    return _Eta()


def _cuda_peak_gb(args) -> float | None:
    if getattr(args, "device", None) is None or args.device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(args.device) / 1e9


def memory_callback(peak_gb=_cuda_peak_gb):
    """A Trainer callback that adds the peak GPU memory so far (`gpu_memory_gb`) to each logged
    step of the log history (nothing on CPU), for the training chart and the tracker."""
    from transformers import TrainerCallback

    class _Memory(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            gb = peak_gb(args)
            if gb is not None and state.log_history:  # the Trainer appended this step's entry already
                state.log_history[-1]["gpu_memory_gb"] = round(gb, 4)

    return _Memory()


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
        activation_checkpointing=model_cfg.gradient_checkpointing,  # transformers 5's name for it
        use_cpu=device.type == "cpu",
        disable_tqdm=not show_progress,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_EncodedDataset(enc, keep),
        data_collator=_Collator(tokenizer.pad_token_id),
        callbacks=[_eta_callback(), memory_callback()],
    )
    total = planned_steps(train_cfg, len(keep))
    beyond = [c for c in list_checkpoints(output_dir) if (checkpoint_step(c) or 0) > total]
    if beyond:  # from a longer training: never resumed from, nor listed as this run's
        from datablame.runs import set_aside

        set_aside(ModelLayout(output_dir), beyond, f"past the new total of {total} steps")
    resume_from = resumable_checkpoint(output_dir) if train_cfg.resume else None
    if resume_from is not None:
        log.info("%s", _resume_note(resume_from, total, train_cfg))
    t0 = time.perf_counter()
    if resume_from is not None and (checkpoint_step(resume_from) or 0) >= total:
        # nothing left to train; Trainer would still take a step when the total ends mid-epoch
        from transformers import TrainerState

        trainer._load_from_checkpoint(str(resume_from))
        trainer.state = TrainerState.load_from_json(str(resume_from / "trainer_state.json"))
        log.info("%s is at the total of %d steps: its weights are the trained model", resume_from.name, total)
    else:
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
