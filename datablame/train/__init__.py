"""Fine-tuning (full or LoRA) through HF Trainer, exact and reproducible on subsets."""

from datablame.train.finetune import TrainResult, finetune, list_checkpoints

__all__ = ["TrainResult", "finetune", "list_checkpoints"]
