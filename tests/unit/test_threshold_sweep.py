"""The threshold sweep: one model pass scored at several thresholds gives at each exactly a separate run's scores;
the decoder case that makes filtering the lowest threshold's entities wrong; the best threshold; `eval --thresholds`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gliner_jax.cli import main
from gliner_jax.decoding import decode_token_probs
from gliner_jax.evaluation import best_threshold, evaluate_examples, evaluate_thresholds, span_scores, sweep_scalars
from gliner_jax.training.config import ModelSection, load_train_config
from gliner_jax.training.model_init import build_model
from tests.utils.faults import ENCODER, GLINER, ROOT, assert_names, one_line_error, save_tiny_model

LONG = ["Ada", "Lovelace", "lived", "in", "London", "."] * 25  # 150 words: read in windows (max_len 64), merged
DEV = [
    {"tokenized_text": ["Ada", "Lovelace", "lived", "in", "London", "."], "ner": [[0, 1, "person"], [4, 4, "city"]]},
    {"tokenized_text": ["Alan", "Turing", "visited", "Paris", "."], "ner": [[0, 1, "person"], [3, 3, "city"]]},
    {"tokenized_text": LONG, "ner": [[0, 1, "person"], [100, 100, "city"]]},
]


@pytest.mark.parametrize("span_mode", ["markerV0", "token_level"])
def test_sweep_scores_each_threshold_as_a_separate_run(span_mode):
    """A random tiny model (span and token decoders), whose scores spread around 0.5: the sweep's scores at each
    threshold, counts and per label, are those of `evaluate_examples` at that threshold alone."""
    section = ModelSection(
        tokenizer=str(ROOT / "data/tiny/tokenizer"), encoder=ENCODER, gliner={**GLINER, "span_mode": span_mode}
    )
    model = build_model(section, seed=0)
    found = model.predict_words([example["tokenized_text"] for example in DEV], ["city", "person"], threshold=0.0)
    scores = [score for spans in found for *_, score in spans]
    thresholds = [0.0, *np.quantile(scores, [0.2, 0.5, 0.8]).tolist(), 0.9]
    sweep = evaluate_thresholds(model, DEV, thresholds, batch_size=2)
    assert list(sweep) == thresholds
    for threshold in thresholds:
        assert sweep[threshold] == evaluate_examples(model, DEV, threshold=threshold, batch_size=2), threshold
    assert len({sweep[t].micro.predicted for t in thresholds}) == len(thresholds)  # every threshold differs


def test_a_higher_threshold_can_keep_a_span_the_lower_one_dropped():
    """Token decoder, 3 words, 1 label, probs (start, end, inside) = (.5, .1, .9), (.9, .9, .5), (.1, .1, .1).
    At 0.3 the candidates are (0, 1) = min(.5, .9, .9, .5) = .5 and (1, 1) = min(.9, .9, .5) = .5; equal scores keep
    their (start, end) order, so (0, 1) is kept and (1, 1), which overlaps it, dropped. At 0.5 the start prob .5 is
    not above the threshold, (0, 1) is no candidate, and (1, 1) (inside .5 is not below 0.5) is kept: not what
    filtering the entities found at 0.3 gives, so the sweep decodes the probabilities again at each threshold."""
    probs = np.array([[[0.5, 0.1, 0.9]], [[0.9, 0.9, 0.5]], [[0.1, 0.1, 0.1]]], np.float32)
    assert decode_token_probs(probs, 3, 1, threshold=0.3) == [(0, 1, 0, 0.5)]
    assert decode_token_probs(probs, 3, 1, threshold=0.5) == [(1, 1, 0, 0.5)]


def test_best_threshold_and_sweep_scalars():
    """Micro F1 at 0.3: 2/3 predicted right of 2 gold (P 2/3, R 1, F1 0.8); at 0.5 and 0.7: 1/1 right (P 1, R 1/2,
    F1 2/3); at 0.9: nothing. The best is 0.3; of equal F1s, the lowest threshold."""
    gold = [{(0, 1, "person"), (4, 4, "city")}]
    at_3 = span_scores([{(0, 1, "person"), (4, 4, "city"), (2, 2, "city")}], gold)
    at_5 = span_scores([{(0, 1, "person")}], gold)
    nothing = span_scores([set()], gold)
    sweep = {0.3: at_3, 0.5: at_5, 0.7: at_5, 0.9: nothing}
    values = sweep_scalars(sweep, "dev")
    expected = {"dev/f1@0.3": 0.8, "dev/f1@0.5": 2 / 3, "dev/f1@0.7": 2 / 3, "dev/f1@0.9": 0.0}
    assert values == pytest.approx(expected | {"dev/best_threshold": 0.3, "dev/best_f1": 0.8})
    assert best_threshold({0.7: at_5, 0.5: at_5, 0.9: nothing}) == 0.5


def test_eval_thresholds_prints_the_sweep_and_reports_it(tmp_path, capsys):
    """`eval --thresholds`: a table with the best threshold on stderr, "sweep" (the micro scores of each threshold,
    the one at --threshold equal to the headline scores) and "best_threshold" in the report; a threshold that is not
    a number in [0, 1] is refused in one line."""
    saved = save_tiny_model(tmp_path / "saved") / "native"
    data = tmp_path / "gold.jsonl"
    data.write_text("".join(json.dumps(example) + "\n" for example in DEV))
    argv = ["eval", "--model", str(saved), "--data", str(data), "--threshold", "0.5"]
    assert main([*argv, "--thresholds", "0.3,0.5,0.7"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [row["threshold"] for row in report["sweep"]] == [0.3, 0.5, 0.7]
    headline = {key: report[key] for key in ("precision", "recall", "f1", "true_positives", "predicted", "gold")}
    assert report["sweep"][1] == {"threshold": 0.5, **headline}
    assert report["best_threshold"] in (0.3, 0.5, 0.7)
    assert f"best threshold: {report['best_threshold']:g}" in captured.err
    for bad in ("0.3,x", "0.3,1.5"):
        assert_names(one_line_error(capsys, [*argv, "--thresholds", bad]), f"--thresholds {bad!r}")


def test_trainer_sweep_thresholds_are_checked():
    """trainer.eval_thresholds: a list of numbers in [0, 1] (empty: no sweep); anything else is refused by name."""
    tiny = ROOT / "configs/tiny.yaml"
    assert load_train_config(tiny, ["trainer.eval_thresholds=[0.25, 1]"]).trainer.eval_thresholds == (0.25, 1)
    assert load_train_config(tiny, ["trainer.eval_thresholds=[]"]).trainer.eval_thresholds == ()
    for bad in ("[0.5, 1.5]", "[0.5, x]", "0.5"):
        with pytest.raises(ValueError, match=r"trainer\.eval_thresholds"):
            load_train_config(tiny, [f"trainer.eval_thresholds={bad}"])
