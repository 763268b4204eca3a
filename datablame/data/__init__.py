"""Training data: load, render with a template, clean, and give every row a stable id."""

from datablame.data.build import build_corpus
from datablame.data.corpus import Corpus, Query, Row
from datablame.data.synthetic import PlantedCorpus, make_planted

__all__ = ["Corpus", "PlantedCorpus", "Query", "Row", "build_corpus", "make_planted"]
