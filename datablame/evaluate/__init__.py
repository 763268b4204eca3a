"""`datablame evaluate`: did the fine-tune help? Generation side by side, BERTScore, semantic
similarity and MMLU-style multiple choice for the base and the fine-tuned model, charts, and
optional experiment tracking (mlflow, tensorboard, wandb)."""

from datablame.evaluate.runner import evaluate
from datablame.evaluate.settings import EvaluateSettings, TrackingSettings, settings_from
from datablame.evaluate.sources import EvalModel

__all__ = ["EvalModel", "EvaluateSettings", "TrackingSettings", "evaluate", "settings_from"]
