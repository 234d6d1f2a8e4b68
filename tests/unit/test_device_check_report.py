"""A device-check step stopped at its deadline still reports what it finished: the `[bench]` lines of its engine
runs (printed by `bench.runner.report`) and pytest's passed tests."""

from gliner_jax.bench.device_check import progress
from gliner_jax.bench.runner import report


def test_a_stopped_step_reports_its_finished_runs_and_passed_tests(capsys):
    report("torch", 10.04, {"tokens_per_s": 1234.56, "entities": []})
    report("reference models", 1.8)
    printed = capsys.readouterr().err.splitlines()
    assert printed == ["[bench] torch: 10.0 s, 1,234.6 tokens/s", "[bench] reference models: 1.8 s"]
    lines = [
        "===== parity: python -m pytest",
        "..s.....x.                      [ 40%]",
        "....",
        *printed,
        "Loading 3/4",
    ]
    assert progress(lines) == [*printed, "12 tests passed"]
    assert progress(["Writing model shards: 1/1", "W1205 hlo_rematerialization.cc: ..."]) == []
