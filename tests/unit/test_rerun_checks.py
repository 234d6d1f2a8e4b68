"""A rerun of a training run against the config saved in its output folder (`training/resume.py`): which changed
keys are refused, which applied, in one line each; metrics.jsonl cut back to the restored step."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gliner_jax.training.config import load_train_config
from gliner_jax.training.resume import check_rerun, cut_metrics, save_config

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def test_a_rerun_names_its_changed_keys_and_refuses_what_cannot_continue(tmp_path, caplog):
    def config(*overrides):
        return load_train_config(TINY, [f"trainer.output_dir={tmp_path}", "trainer.num_steps=20", *overrides])

    save_config(tmp_path, config())
    assert check_rerun(tmp_path, config("model.gliner.hidden_size=32"), None)  # no checkpoint: nothing to continue
    with pytest.raises(ValueError, match=r"\(changed: model\.gliner\.hidden_size 64 -> 32\)") as refused:
        check_rerun(tmp_path, config("model.gliner.hidden_size=32"), 10)
    assert "\n" not in str(refused.value)
    with pytest.raises(ValueError, match=r"finished at step 20.*optimizer\.encoder_lr 0\.003 -> 0\.001"):
        check_rerun(tmp_path, config("optimizer.encoder_lr=1e-3"), 20)

    with caplog.at_level(logging.WARNING, "gliner_jax.training.resume"):
        assert check_rerun(tmp_path, config(), 10)
        assert not caplog.records
        assert check_rerun(tmp_path, config("optimizer.encoder_lr=1e-3", "trainer.log_every=5"), 10)
        assert not check_rerun(tmp_path, config("data.train=other.jsonl"), 10)  # the new data from its beginning
        assert not check_rerun(tmp_path, config("data.shuffle=false"), 10)  # the saved position is of another order
    first, second, third = (record.getMessage() for record in caplog.records)
    assert first.endswith("optimizer.encoder_lr 0.003 -> 0.001, trainer.log_every 20 -> 5")
    assert "data.train 'data/tiny/train.jsonl' -> 'other.jsonl'; the data is read from its beginning" in second
    assert third.endswith("data.shuffle True -> False; the data is read from its beginning")


def test_metrics_are_cut_back_to_the_restored_step(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 2, "dev/f1": 0.5}, {"step": 3, "loss": 1.0}]
    metrics.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 4, "lo')  # cut off mid-line
    assert cut_metrics(metrics, 2) == {"loss": 2.0, "dev/f1": 0.5}
    assert [json.loads(line) for line in metrics.read_text().splitlines()] == lines[:3]
    assert cut_metrics(tmp_path / "none.jsonl", 2) == {}
