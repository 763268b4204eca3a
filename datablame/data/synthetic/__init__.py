"""Synthetic corpora with known attribution ground truth."""

from datablame.data.synthetic.hops import HopsCorpus, hops_tokens, make_hops
from datablame.data.synthetic.planted import PlantedCorpus, make_planted

__all__ = ["HopsCorpus", "PlantedCorpus", "hops_tokens", "make_hops", "make_planted"]
