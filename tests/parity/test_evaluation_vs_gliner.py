"""Span-level evaluation against gliner's evaluator, GLiNER.evaluate and `gliner-jax eval` against gliner's
GLiNER.evaluate on the same reference model. Reading gold data (CoNLL, JSON, label maps):
tests/unit/test_eval_data.py."""

from __future__ import annotations

import json
import warnings

import gliner.model
import pytest
from gliner.evaluation import BaseNEREvaluator
from gliner.evaluation.utils import extract_tp_actual_correct, flatten_for_eval
from hypothesis import given, settings
from hypothesis import strategies as st

from gliner_jax import GLiNER
from gliner_jax.cli import main
from gliner_jax.data_formats import read_conll
from gliner_jax.evaluation import span_scores
from gliner_jax.testing.builders import CORPUS, build_reference, quantile_thresholds


def reference_scores(gold: list, predicted: list) -> tuple[str, float, float, float]:
    """gliner's summary line and micro precision, recall and F1 (its zero-division warnings silenced)."""
    evaluator = BaseNEREvaluator(gold, predicted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        line, _ = evaluator.evaluate()
        scores = evaluator.compute_prf(*evaluator.transform_data())
    return line, scores["precision"], scores["recall"], scores["f_score"]


def assert_same_as_reference(gold: list, predicted: list) -> None:
    ours = span_scores(predicted, gold)
    line, precision, recall, f1 = reference_scores(gold, predicted)
    assert (ours.precision, ours.recall, ours.f1) == (precision, recall, f1)
    assert str(ours) == line.rstrip("\n")
    # Per label: gliner's own per-type counts (the arrays its micro average sums).
    flat_gold, flat_predicted = flatten_for_eval(*BaseNEREvaluator(gold, predicted).transform_data())
    pred_sum, tp_sum, true_sum, names = extract_tp_actual_correct(flat_gold, flat_predicted)
    assert list(ours.per_label) == names
    for name, p, t, g in zip(names, pred_sum, tp_sum, true_sum, strict=True):
        scores = ours.per_label[name]
        assert (scores.predicted, scores.true_positives, scores.gold) == (p, t, g)


def test_hand_cases_match_reference_evaluator():
    gold = [
        [(0, 1, "person"), (3, 3, "city")],
        [],
        [(2, 4, "org"), (2, 4, "org"), (5, 5, "person")],  # a duplicated gold span counts once
        [(0, 0, "date")],
        [(1, 2, "person")],
    ]
    predicted = [
        [(0, 1, "person"), (3, 3, "org"), (3, 3, "org")],  # one hit, one wrong label (predicted twice)
        [(0, 0, "person")],  # a prediction in a text without gold
        [(2, 4, "org"), (5, 6, "person")],  # one hit, one boundary error
        [],  # empty predictions
        [(1, 2, "person"), (1, 2, "city")],  # multi-label: one hit, one false positive
    ]
    assert_same_as_reference(gold, predicted)
    micro = span_scores(predicted, gold).micro  # hand-checked: 3 hits, 7 distinct predictions, 6 distinct gold
    assert (micro.true_positives, micro.predicted, micro.gold) == (3, 7, 6)
    assert micro.precision == pytest.approx(3 / 7) and micro.recall == pytest.approx(0.5)
    assert micro.f1 == pytest.approx(2 * (3 / 7) * 0.5 / (3 / 7 + 0.5))


@pytest.mark.parametrize(
    ("gold", "predicted"),
    [([[], []], [[], []]), ([[(0, 0, "a")]], [[]]), ([[]], [[(0, 0, "a")]]), ([[(0, 0, "a")]], [[(0, 0, "a")]])],
)
def test_degenerate_cases_match_reference_evaluator(gold, predicted):
    assert_same_as_reference(gold, predicted)


SPANS = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 2), st.sampled_from(["person", "city", "org"])).map(
        lambda t: (t[0], t[0] + t[1], t[2])
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(SPANS, SPANS), max_size=5))
def test_random_cases_match_reference_evaluator(texts):
    assert_same_as_reference([gold for gold, _ in texts], [predicted for _, predicted in texts])


# --- GLiNER.evaluate and the CLI against gliner's GLiNER.evaluate ---------------------------------------------------

LABELS = ["date", "location", "organization", "person"]
WORDS = [sentence.replace(",", " ,").replace(".", " .").split() for sentence in CORPUS]


def predictions_of(reference, examples: list[dict], **options) -> list[list[tuple]]:
    """The word spans gliner's GLiNER.evaluate predicts (caught on their way into its evaluator)."""
    caught = []

    class Catching(BaseNEREvaluator):
        def __init__(self, all_true, all_outs):
            caught.extend([(s.start, s.end, s.entity_type) for s in spans] for spans in all_outs)
            super().__init__(all_true, all_outs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gliner.model, "BaseNEREvaluator", Catching)
        reference_evaluate(reference, examples, LABELS, **options)
    return caught


def reference_evaluate(reference, examples, labels=None, **options) -> tuple[str, float]:
    """gliner's GLiNER.evaluate with entity_types = `labels`, by default the sorted labels of the data."""
    labels = labels or sorted({label for example in examples for _, _, label in example["ner"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reference.evaluate(examples, entity_types=labels, batch_size=4, **options)


@pytest.fixture(scope="module")
def setup(gliner_backbone, tmp_path_factory):
    """(reference model, its directory, our model over it, a threshold, gold built around the reference's own
    predictions: every other one kept, the rest relabelled, plus a missed entity per text)."""
    directory = tmp_path_factory.mktemp("span")
    reference = build_reference(
        gliner_backbone, directory, logit_scale=4.0, span_mode="markerV0", hidden_size=48, max_width=4, max_len=48
    )
    threshold = quantile_thresholds(reference, [" ".join(words) for words in WORDS], LABELS, (0.95,))[0]
    unlabelled = [{"tokenized_text": words, "ner": []} for words in WORDS]
    found = predictions_of(reference, unlabelled, threshold=threshold, flat_ner=True)
    assert sum(map(len, found)) >= 6, found
    examples = []
    for words, spans in zip(WORDS, found, strict=True):
        ner = [
            [s, e, label if i % 2 == 0 else LABELS[(LABELS.index(label) + 1) % 4]]
            for i, (s, e, label) in enumerate(spans)
        ]
        examples.append({"tokenized_text": words, "ner": [*ner, [len(words) - 1, len(words) - 1, "person"]]})
    return reference, directory, GLiNER.from_pretrained(directory), threshold, examples


@pytest.mark.parametrize(("flat_ner", "multi_label"), [(True, False), (False, False), (False, True)])
def test_evaluate_matches_reference(setup, flat_ner, multi_label):
    reference, _, ours, threshold, examples = setup
    options = dict(threshold=threshold, flat_ner=flat_ner, multi_label=multi_label)
    line, f1 = reference_evaluate(reference, examples, **options)
    result = ours.evaluate(examples, batch_size=4, **options)  # labels default to the sorted labels of the data
    assert 0 < result.precision < 1 and 0 < result.recall < 1
    assert str(result) == line.rstrip("\n")
    assert result.f1 == pytest.approx(f1, abs=1e-12)


def test_evaluate_reads_files(setup, tmp_path):
    """The same numbers from a JSONL file and from its CoNLL rendering (flat gold: one tag per word)."""
    reference, _, ours, threshold, examples = setup
    flat = [{**ex, "ner": [entity for entity in ex["ner"] if entity[0] == entity[1]]} for ex in examples]
    line, f1 = reference_evaluate(reference, flat, LABELS, threshold=threshold, flat_ner=True)
    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(example) + "\n" for example in flat))
    conll = []
    for example in flat:
        tags = ["O"] * len(example["tokenized_text"])
        for start, _, label in example["ner"]:
            tags[start] = f"B-{label}"
        conll += [*map(" ".join, zip(example["tokenized_text"], tags, strict=True)), ""]
    (tmp_path / "gold.conll").write_text("\n".join(conll))
    for name in ("gold.jsonl", "gold.conll"):
        result = ours.evaluate(tmp_path / name, threshold=threshold, batch_size=4, labels=LABELS)
        assert result.micro.true_positives > 0 and result.micro.gold > result.micro.true_positives
        assert str(result) == line.rstrip("\n"), name
        assert result.f1 == pytest.approx(f1, abs=1e-12), name


def test_cli_eval(setup, tmp_path, capsys):
    """CoNLL with upper-case types renamed by a mapping file (MISC dropped) vs gliner on the renamed gold."""
    reference, directory, _, threshold, examples = setup
    upper = {label: label[:3].upper() for label in LABELS}
    lines = []
    for example in examples:
        tags = ["O"] * len(example["tokenized_text"])
        for start, end, label in example["ner"]:
            if all(tag == "O" for tag in tags[start : end + 1]):  # CoNLL holds flat gold only
                tags[start : end + 1] = [f"B-{upper[label]}"] + [f"I-{upper[label]}"] * (end - start)
        tags[0] = "B-MISC" if tags[0] == "O" else tags[0]
        lines += [*map("\t".join, zip(example["tokenized_text"], tags, strict=True)), ""]
    (tmp_path / "gold.conll").write_text("-DOCSTART-\tO\n\n" + "\n".join(lines))
    (tmp_path / "map.yaml").write_text("".join(f"{short}: {label}\n" for label, short in upper.items()) + "MISC:\n")
    gold = read_conll(tmp_path / "gold.conll")
    renamed = [
        {**ex, "ner": [[s, e, LABELS[[*upper.values()].index(t)]] for s, e, t in ex["ner"] if t != "MISC"]}
        for ex in gold
    ]
    line, f1 = reference_evaluate(reference, renamed, threshold=threshold, flat_ner=True)

    args = ["eval", "--model", str(directory), "--data", str(tmp_path / "gold.conll"), "--threshold", str(threshold)]
    assert main([*args, "--label-map", str(tmp_path / "map.yaml"), "--batch-size", "4"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["examples"] == len(examples) and report["flat_ner"] is True
    assert report["f1"] == pytest.approx(f1, abs=1e-12)
    assert f"P: {report['precision']:.2%}\tR: {report['recall']:.2%}\tF1: {report['f1']:.2%}\n" == line
    assert set(report["per_label"]) <= set(LABELS)
    assert sum(scores["gold"] for scores in report["per_label"].values()) == report["gold"]
    assert "(micro)" in err and "person" in err and "MISC" not in err

    with pytest.raises(SystemExit, match=r"error: .*nowhere\.conll: no such file"):
        main(["eval", "--model", str(directory), "--data", str(tmp_path / "nowhere.conll")])
    (tmp_path / "bad.conll").write_text("a O\nb\n")
    with pytest.raises(SystemExit, match=r"error: .*bad\.conll:2: expected a token and a tag"):
        main(["eval", "--model", str(directory), "--data", str(tmp_path / "bad.conll")])
