"""The benchmark suite against gliner's `get_for_one_path` / `get_for_all_path` on one reference model: each
dataset's P / R / F1 and both averages; a `sample_` folder skipped; entities whose characters do not align with
words counted as gliner counts them."""

from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
from gliner.evaluation.evaluate_ner import get_for_all_path, get_for_one_path

from gliner_jax import GLiNER
from gliner_jax.benchmark_suite import evaluate_benchmark, read_benchmark
from gliner_jax.testing.builders import build_reference
from tests.utils.benchmark import record, write_dataset

PEOPLE = [
    record("Barack Obama was born in Honolulu , Hawaii .", ("Barack Obama", "PERSON"), ("Honolulu", "Location")),
    record("Angela Merkel led Germany from 2005 to 2021 .", ("Angela Merkel", "PERSON"), ("Germany", "Location")),
    record("Marie Curie won the Nobel Prize in Physics .", ("Marie Curie", "PERSON"), ("Nobel Prize", "award")),
    # "Hawaii" inside the word "Hawaii," (its end falls inside a word) and "Obam" (a word cut short).
    record("Obama was born in Honolulu, Hawaii, in 1961 .", ("Hawaii", "Location"), ("Obam", "PERSON")),
]
PLACES = [
    record("The Eiffel Tower in Paris is 330 metres tall .", ("Eiffel Tower", "Location"), ("Paris", "Location")),
    record("Apple Inc. released the iPhone in San Francisco .", ("Apple Inc.", "ORG"), ("San Francisco", "Location")),
    record("Dr. Smith-Jones works at the World Health Organization in Geneva .", ("Geneva", "Location")),
]
NESTED = [
    record(
        "The World Health Organization in Geneva hired Dr. Smith-Jones .",
        ("World Health Organization", "ORG"),
        ("Health", "ORG"),
        ("Geneva", "location"),
    ),
    record("Angela Merkel led Germany .", ("Angela Merkel", "person"), ("Angela", "person")),
]


@pytest.fixture(scope="module")
def suite(gliner_backbone, tmp_path_factory):
    """(reference model, our model, benchmark root): two zero-shot sets, a flat one, a nested one, a sample_.

    The root is outside pytest's folders: gliner gives a file the role (train, dev, test, labels) whose name is in
    its whole path, so under "/tmp/pytest-of-..." every file would be a test file."""
    directory = tmp_path_factory.mktemp("model")
    # The random heads' logits sit a little below 0 (probabilities near 0.23); scaled by -4 they sit above, so
    # that gliner's fixed threshold 0.5 predicts entities (their probabilities still differ by a few hundredths).
    reference = build_reference(
        gliner_backbone, directory, logit_scale=-4.0, span_mode="markerV0", hidden_size=48, max_width=4
    )
    root = Path(tempfile.mkdtemp(prefix="suite_"))
    assert not any(role in str(root) for role in ("train", "dev", "test", "labels", "sample_")), root
    write_dataset(root, "mit-movie", PEOPLE, ["PERSON", "Location"])
    write_dataset(root, "CrossNER_AI", PLACES, ["location", "org"])
    write_dataset(root, "conll2003", PEOPLE + PLACES, ["person", "location", "org", "award"])
    write_dataset(root, "ACE 2005", NESTED, ["ORG", "Location", "person"])
    sample = write_dataset(root, "sample_x", PLACES, ["location"])
    (sample / "test.json").write_text("{ not JSON")  # never read
    yield reference, GLiNER.from_pretrained(directory), root
    shutil.rmtree(root)


def test_scores_and_averages_match_gliner(suite, tmp_path):
    reference, ours, root = suite
    result = evaluate_benchmark(ours, read_benchmark(root))
    assert [dataset.name for dataset in result.datasets] == ["ACE 2005", "CrossNER_AI", "conll2003", "mit-movie"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gliner's zero-division warnings
        for dataset in result.datasets:
            name, line, f1 = get_for_one_path(str(root / dataset.name), reference)
            assert name == dataset.name
            assert str(dataset.evaluation) == line.rstrip("\n")
            assert dataset.evaluation.f1 == pytest.approx(f1, abs=1e-12)
        get_for_all_path(reference, 0, str(tmp_path), str(root))
    assert any(dataset.evaluation.f1 > 0 for dataset in result.datasets)  # predictions at gliner's threshold 0.5

    # gliner's table: the others, their average, then the zero-shot sets and theirs (percentages, one decimal).
    tables = (tmp_path / "tables.txt").read_text()
    rows = re.findall(r"^(.+?)\s*: ([\d.]+)%$", tables, flags=re.MULTILINE)
    assert [name for name, _ in rows] == ["ACE 2005", "conll2003", "Average", "CrossNER_AI", "mit-movie", "Average"]
    assert rows[2][1] == f"{100 * result.all_f1:.1f}"
    assert rows[5][1] == f"{100 * result.zero_shot_f1:.1f}"
    assert result.all_f1 == pytest.approx(sum(d.evaluation.f1 for d in result.datasets[::2]) / 2)
