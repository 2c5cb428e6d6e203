"""Nightly batch recommendation pipeline: steps, configuration, storage and the `recsys` CLI."""
import os

# OpenMP threads (scikit-learn's gradient boosting, implicit) sleep rather than spin while they wait:
# beside other busy processes, spinning threads steal the cores their own team needs and a step
# collapses (the rank step took 7x longer beside two busy processes; passive: about the same time;
# docs/benchmarks.md, "Under load"). Set before any OpenMP runtime loads; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
