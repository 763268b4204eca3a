"""Ground-truth benchmarks and ranking metrics."""
