"""Example run configs shipped with the package (`datablame init --example NAME`)."""

EXAMPLES = {"default": "run.yaml", "tinyllama": "tinyllama-patent-qa.yaml"}  # example name -> file here
