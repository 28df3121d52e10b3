"""Measuring memory for real: the live-storage tracker, the training-step harness (fake, CPU or CUDA tensors),
the NF4 stand-in, the per-layer saved-bytes probe, exact mode (`--trace`) and calibration from real runs.
Depends on the planner, never the other way round; torch is imported by the modules that need it, not here."""
