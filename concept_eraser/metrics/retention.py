"""Both paired retention metrics at once, as the unlearn job reports them (not a metric of its own).

    r = retention_scores(before, after, rows=plan.rows_with("retain_in", "retain_cross"))
    r.scores   {"lpips": ..., "ssim_distance": ...}  (no "lpips" key when it is unavailable)
    r.events   MetricReady("lpips", mean, per_cell), MetricReady("ssim-distance", mean, per_cell)
    r.notes    one line per unavailable metric (the LPIPS backbone message), for a Log("warning")
    r.results  the PairResults (per row, size, description)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from concept_eraser.spec.events import Grid, MetricReady

from .lpips_retention import lpips_retention
from .pairs import PairResult
from .ssim_distance import ssim_distance


@dataclass(frozen=True)
class RetentionScores:
    scores: dict[str, float]
    events: list[MetricReady]
    notes: list[str]
    results: dict[str, PairResult]


def retention_scores(before: Grid, after: Grid, rows: Sequence[int] | None = None,
                     lpips_weights: str | Path | None = None) -> RetentionScores:
    results = {"lpips": lpips_retention(before, after, rows, weights=lpips_weights),
               "ssim-distance": ssim_distance(before, after, rows)}
    scores, events, notes = {}, [], []
    for key, r in results.items():
        if r.ok:
            scores[key.replace("-", "_")] = r.mean
            events.append(r.event())
        else:
            notes.append(r.message)
    return RetentionScores(scores, events, notes, results)


def score_events(scores: Mapping[str, float]) -> list[MetricReady]:
    """One MetricReady per flat score (e.g. demo_scores' dict), in key order."""
    return [MetricReady(k, float(v)) for k, v in scores.items()]
