"""`datablame plan`: per-stage peak memory and time before a run (issue 21, item 5).

`shapes` reads the model's shape without weights (meta device), `costs` holds the arithmetic
(bytes and FLOPs per stage, store size, recommendations under a memory budget), `calibrate`
measures the device (a few seconds: one featurize batch, one training step, one decode step,
a save/load round trip, the process start) to turn FLOPs and bytes into seconds.
"""
