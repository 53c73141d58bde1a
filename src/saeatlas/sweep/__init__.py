"""Sparsity sweeps: a family of SAEs, their held-out frontier and a recommendation."""

from .pareto import knee, pareto_front
from .stability import mean_max_cosine
from .sweep import SweepPoint, SweepResult, sweep

__all__ = ["SweepPoint", "SweepResult", "knee", "mean_max_cosine", "pareto_front", "sweep"]
