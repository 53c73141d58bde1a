"""The whole pipeline from one config: ``saeatlas run config.yaml`` and ``saeatlas demo``."""

from .config import (
    AblationSection,
    ReportSection,
    RunConfig,
    StabilitySection,
    SweepSection,
    load_run_config,
)
from .run import RunResult, StageOutcome, run_pipeline
from .summary import module_summary

__all__ = [
    "AblationSection",
    "ReportSection",
    "RunConfig",
    "RunResult",
    "StabilitySection",
    "StageOutcome",
    "SweepSection",
    "load_run_config",
    "module_summary",
    "run_pipeline",
]
