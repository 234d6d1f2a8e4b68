"""What a rerun of a training run needs: stop signals that end it at a saved step, its resolved config (saved in the
output folder and compared key by key on a rerun), and its metrics cut back to the step it resumes from."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Keys that define the network or the layout of the train state (or its random streams): a checkpoint trained with
# other values cannot be continued.
FIXED_KEYS = (
    "model.gliner",
    "model.encoder",
    "model.init_from",
    "model.tokenizer",
    "model.labels_encoder",
    "model.labels_tokenizer",
    "model.param_dtype",
    "optimizer.encoder_pattern",
    "optimizer.labels_encoder_pattern",
    "optimizer.frozen_patterns",
    "optimizer.grad_accum_steps",
    "optimizer.max_grad_norm",
    "trainer.seed",
)
# Keys of the data pipeline: changed, the new data is read from its beginning (the saved position is the old data's).
DATA_KEYS = (
    "data.train",
    "data.sources",
    "data.packing",
    "data.row_length",
    "data.shuffle",
    "trainer.global_batch_size",
)
TRAINING_KEYS = (*DATA_KEYS, "optimizer", "loss")  # what a finished run would not use


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT stopped the run after `step`, whose checkpoint is saved; `signum` is the signal."""

    def __init__(self, step: int, signum: int):
        super().__init__(f"interrupted at step {step}; saved; rerun the same command to resume")
        self.step, self.signum = step, signum


class StopSignals:
    """While entered (in the main thread), SIGTERM and SIGINT only set `received` (the signal's number), so that
    the loop can finish its step and save; a second signal takes the signal's previous action."""

    def __init__(self) -> None:
        self.received = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)  # None: set outside Python
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        previous = self._previous.get(signum)
        signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        logger.warning("%s: finishing this step and saving (send it again to stop at once)", signal.strsignal(signum))


def config_tree(config: Any) -> dict[str, Any]:
    """A run config as plain YAML values (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat |= _flat(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two config trees (a missing key reads as None), with both values;
    the output folder itself is not compared."""
    old_flat, new_flat = _flat(old), _flat(new)
    keys = sorted((old_flat.keys() | new_flat.keys()) - {"trainer.output_dir"})
    return {key: (old_flat.get(key), new_flat.get(key)) for key in keys if old_flat.get(key) != new_flat.get(key)}


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def _listed(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items())


def check_rerun(output_dir: Path, config: Any, step: int | None) -> bool:
    """Compare `config` with the config saved in `output_dir` by the run whose newest checkpoint is `step` (None:
    none, nothing to compare). ValueError (one line naming the keys) for a change of the network or of the train
    state's layout, or for data, optimizer or loss changes to a finished run (they would train nothing); other
    changes are applied from `step`, in one logged line. Returns whether the saved data position still applies."""
    path = output_dir / CONFIG_FILE
    if step is None or not path.exists():
        return True
    changes = changed_keys(yaml.safe_load(path.read_text(encoding="utf-8")), config_tree(config))
    fixed = {key: values for key, values in changes.items() if _under(key, FIXED_KEYS)}
    if fixed:
        raise ValueError(
            f"{output_dir} holds a run of another network or train state (changed: {_listed(fixed)}); "
            "rerun with its values or use a new trainer.output_dir"
        )
    training = {key: values for key, values in changes.items() if _under(key, TRAINING_KEYS)}
    if training and step >= config.trainer.num_steps:
        raise ValueError(
            f"{output_dir} holds a run finished at step {step}: the changes would train nothing "
            f"({_listed(training)}); raise trainer.num_steps or use a new trainer.output_dir"
        )
    data_changed = any(_under(key, DATA_KEYS) for key in changes)
    if changes:
        logger.warning(
            "resuming from step %d with changes applied from there: %s%s",
            step,
            _listed(changes),
            "; the data is read from its beginning" if data_changed else "",
        )
    return not data_changed


def save_config(output_dir: Path, config: Any) -> None:
    """Write the resolved run config to `output_dir/config.yaml` (replacing it atomically)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    partial = output_dir / (CONFIG_FILE + ".partial")
    partial.write_text(yaml.safe_dump(config_tree(config), sort_keys=False), encoding="utf-8")
    os.replace(partial, output_dir / CONFIG_FILE)


def cut_metrics(path: Path, step: int) -> dict[str, float]:
    """Drop the lines of metrics.jsonl after `step` (and a line cut off mid-write); returns the values logged at
    the last step kept."""
    if not path.exists():
        return {}
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", step + 1) <= step:
            records.append(record)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    os.replace(partial, path)
    last_step = records[-1]["step"] if records else None
    last = {}
    for record in records:
        if record["step"] == last_step:
            last |= {key: value for key, value in record.items() if key != "step"}
    return last
