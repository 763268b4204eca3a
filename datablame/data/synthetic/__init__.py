"""Synthetic corpora with known attribution ground truth."""

from datablame.data.synthetic.planted import PlantedCorpus, make_planted

__all__ = ["PlantedCorpus", "make_planted"]
