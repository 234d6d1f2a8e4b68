"""A run's Orbax checkpoint manager: the newest `trainer.keep_checkpoints` steps and, with `trainer.best_by`, the
best-scoring one too (Orbax's `LatestN` and `BestN` preservation policies; a tie goes to the later step).

With `best_by`, every checkpoint carries its scores as Orbax metrics (an evaluation step's `BEST_BY` values, `{}`
for the others), so that a rerun finds the best step again from what is on disk.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN

from gliner_jax.benchmark_suite import BenchmarkDataset
from gliner_jax.training.config import BEST_BY, TrainerSection

# The benchmark averages and whether each is over the zero-shot datasets (True) or over the others (False).
BENCHMARK_GROUPS = {"benchmark/zero_shot_f1": True, "benchmark/all_f1": False}


def check_best_by(best_by: str | None, benchmark: Sequence[BenchmarkDataset] | None) -> None:
    """ValueError (one line) for a benchmark average that the benchmark's datasets never give (an empty group)."""
    if best_by in BENCHMARK_GROUPS and benchmark is not None:
        zero_shot = BENCHMARK_GROUPS[best_by]
        if not any(dataset.zero_shot == zero_shot for dataset in benchmark):
            group = "zero-shot" if zero_shot else "non-zero-shot"
            raise ValueError(f"trainer.best_by={best_by}: data.benchmark has no {group} dataset to give it")


def checkpoint_manager(directory: Path, run: TrainerSection) -> ocp.CheckpointManager:
    """The manager of a run's checkpoints (items "state" and "data"), saving asynchronously and removing the
    folders of saves cut off mid-write."""
    policy = LatestN(n=run.keep_checkpoints)
    best_fn = None
    if run.best_by is not None:
        best_fn = score_of(run.best_by)
        policy = AnyPreservationPolicy(
            [policy, BestN(get_metric_fn=best_fn, n=1, keep_checkpoints_without_metrics=False)]
        )
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,
        preservation_policy=policy,
        best_fn=best_fn,
        best_mode="max",
    )
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "data"))


def score_of(best_by: str) -> Callable[[Mapping[str, float]], float]:
    """A checkpoint's score from its metrics; -inf where it has none (not an evaluation step, or one of a run
    that chose by another score)."""
    return lambda metrics: metrics.get(best_by, -math.inf)


def checkpoint_scores(values: Mapping[str, float]) -> dict[str, float]:
    """The scores a checkpoint carries: those of `BEST_BY` among a step's logged values."""
    return {name: values[name] for name in BEST_BY if name in values}


def best_checkpoint(
    manager: ocp.CheckpointManager, best_by: str, latest_scores: Mapping[str, float] | None = None
) -> tuple[int, float] | None:
    """The best checkpoint's step and `best_by` score; None when no checkpoint has that score. `latest_scores`: the
    scores of the newest checkpoint, whose save may still be under way (the others' are read from disk)."""
    step = manager.best_step()
    if step is None:
        return None
    newest = latest_scores is not None and step == manager.latest_step()
    score = ((latest_scores if newest else manager.metrics(step)) or {}).get(best_by)
    return None if score is None else (step, score)
