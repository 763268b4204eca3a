"""datablame: git blame for model behaviour.

Given a model, the rows it was trained on and an output it produced, name the training rows
responsible. Scores follow one sign convention: higher = the row pushed the query's loss down.
"""

__version__ = "0.1.0"
