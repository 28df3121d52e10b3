"""CLI commands of the benchmarks package (`fitplan bench`)."""
