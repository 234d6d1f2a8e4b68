"""`trainer.best_by`: every evaluation saved as a checkpoint with its score, the best one kept beside the newest
`keep_checkpoints` (and found again by a resumed run), `best/step` and `best/score` logged, its parameters exported
to OUTPUT/best while OUTPUT/final holds the last step's; a score no evaluation of the run gives is refused in one
line. The dev scores are scripted (the evaluation replaced), the training steps real."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from gliner_jax.model import GLiNER
from gliner_jax.training.checkpoints import best_checkpoint, checkpoint_manager
from gliner_jax.training.config import TrainerSection, load_train_config
from gliner_jax.training.trainer import Trainer
from tests.utils.benchmark import record, write_dataset
from tests.utils.faults import ROOT, assert_names, one_line_error

TINY = str(ROOT / "configs" / "tiny.yaml")
# dev/f1 of each step's evaluation: the best, step 2, in the middle of the first run (4 steps); the resumed run's
# step 5 scores below it.
SCORES = {1: 0.2, 2: 0.9, 3: 0.4, 4: 0.6, 5: 0.8}


def checkpoint_params(run: Path, step: int) -> dict[str, np.ndarray]:
    """The parameters saved in checkpoint `step`, read with Orbax alone, by their path in the model."""
    state = ocp.StandardCheckpointer().restore((run / "checkpoints" / str(step) / "state").absolute())
    flat = jax.tree_util.tree_flatten_with_path(state["params"])[0]
    return {"/".join(key.key for key in path).removesuffix("/value"): np.asarray(value) for path, value in flat}


def exported_params(folder: Path) -> dict[str, np.ndarray]:
    """The parameters of an exported gliner directory, by their path in the model."""
    state = nnx.state(GLiNER.from_pretrained(folder).model, nnx.Param)
    return {"/".join(map(str, path)): np.asarray(value) for path, value in nnx.to_flat_state(state)}


def assert_same(found: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert found.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(found[name], value, err_msg=name)


def best_records(run: Path) -> list[tuple[int, int, float]]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(line["step"], line["best/step"], line["best/score"]) for line in lines if "best/step" in line]


def test_the_best_checkpoint_is_kept_logged_exported_and_found_again(tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "_evaluate", lambda trainer: {"dev/f1": SCORES[trainer.step]})
    run = tmp_path / "run"
    overrides = [
        f"trainer.output_dir={run}",
        "trainer.eval_every=1",
        "trainer.save_every=100",
        "trainer.keep_checkpoints=1",
        "trainer.log_every=100",
        "trainer.best_by=dev/f1",
    ]
    Trainer(load_train_config(TINY, [*overrides, "trainer.num_steps=4"])).fit()
    assert sorted(int(path.name) for path in (run / "checkpoints").iterdir()) == [2, 4]  # 1 and 3 deleted
    assert best_records(run) == [(1, 1, 0.2), (2, 2, 0.9), (3, 2, 0.9), (4, 2, 0.9)]
    best, last = checkpoint_params(run, 2), checkpoint_params(run, 4)
    assert any(not np.array_equal(best[name], last[name]) for name in best)  # two steps of training apart
    assert_same(exported_params(run / "best"), best)
    assert_same(exported_params(run / "final"), last)

    Trainer(load_train_config(TINY, [*overrides, "trainer.num_steps=5"])).fit()  # resumes from step 4
    assert sorted(int(path.name) for path in (run / "checkpoints").iterdir()) == [2, 5]
    assert best_records(run)[-2:] == [(4, 2, 0.9), (5, 2, 0.9)]
    assert_same(exported_params(run / "best"), best)
    assert_same(exported_params(run / "final"), checkpoint_params(run, 5))


def test_ties_go_to_the_later_step_and_unscored_checkpoints_rank_last(tmp_path):
    """Steps without a dev/f1 score (not evaluated, or scored by another name) are never the best; of two equal
    best scores the later step is kept; a new manager over the folder finds the same best."""
    run = TrainerSection(keep_checkpoints=1, best_by="dev/f1")
    steps = {1: {}, 2: {"dev/f1": 0.5}, 3: {"dev/f1": 0.7}, 4: {"benchmark/all_f1": 0.9}, 5: {"dev/f1": 0.7}, 6: {}}
    manager = checkpoint_manager(tmp_path, run)
    for step, scores in steps.items():
        items = {"state": ocp.args.StandardSave({"x": np.full(2, step)}), "data": ocp.args.JsonSave({})}
        manager.save(step, args=ocp.args.Composite(**items), metrics=scores, force=True)
    manager.wait_until_finished()
    assert manager.all_steps() == [5, 6]
    assert best_checkpoint(checkpoint_manager(tmp_path, run), "dev/f1") == (5, 0.7)


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["trainer.best_by=dev/loss"], ["trainer.best_by must be null or one of dev/f1,", "'dev/loss'"]),
        (["trainer.best_by=dev/f1", "data.dev=null"], ["trainer.best_by=dev/f1 needs data.dev"]),
        (["trainer.best_by=benchmark/all_f1"], ["trainer.best_by=benchmark/all_f1 needs data.benchmark"]),
    ],
    ids=["unknown", "no-dev", "no-benchmark"],
)
def test_a_score_no_evaluation_gives_is_refused_in_one_line(tmp_path, capsys, overrides, fragments):
    line = one_line_error(capsys, ["train", "--config", TINY, f"trainer.output_dir={tmp_path}", *overrides])
    assert_names(line, "tiny.yaml", *fragments)


def test_a_benchmark_average_of_an_empty_group_is_refused_in_one_line(tmp_path, capsys):
    """A suite without zero-shot datasets never gives benchmark/zero_shot_f1."""
    suite = tmp_path / "suite"
    write_dataset(suite, "conll", [record("Ada Lovelace lived in London .", ("Ada Lovelace", "person"))], ["person"])
    argv = ["train", "--config", TINY, f"trainer.output_dir={tmp_path / 'run'}", f"data.benchmark={suite}"]
    line = one_line_error(capsys, [*argv, "trainer.best_by=benchmark/zero_shot_f1"])
    assert_names(line, "trainer.best_by=benchmark/zero_shot_f1", "no zero-shot dataset")
