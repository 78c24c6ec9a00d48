"""Torch-free and Qt-free: what crosses the wall between the GUI and the engine."""

from .events import Event, Grid, GridReady, Job, JobResult, Log, MetricReady, Preview, Progress, StageStarted
from .jobspec import (
    SCHEDULERS,
    Concept,
    DeviceSpec,
    ForgetImage,
    JobSpec,
    ModelSource,
    SampleRow,
    SamplingSpec,
    load_job,
    parse_job,
    save_job,
)
from .registry import (
    ExportFormat,
    MemoryEstimate,
    MethodCard,
    MethodConfig,
    MethodInfo,
    MetricInfo,
    Needs,
    RunOutcome,
)
from .runloop import CancelToken, JobCancelled, JobContext, UserError, guarded, one_line, run_blocking
from .summary import DemoModel, ModelSummary

__all__ = [
    "SCHEDULERS", "CancelToken", "ExportFormat", "MemoryEstimate", "MethodCard", "MethodConfig", "MethodInfo",
    "MetricInfo", "Needs", "RunOutcome", "Concept", "DemoModel", "DeviceSpec", "Event", "ForgetImage", "Grid",
    "GridReady", "Job", "JobCancelled", "JobContext", "JobResult", "JobSpec", "Log", "MetricReady",
    "ModelSource", "ModelSummary", "Preview", "Progress", "SampleRow", "SamplingSpec", "StageStarted",
    "UserError", "guarded", "load_job", "one_line", "parse_job", "run_blocking", "save_job",
]
