"""The unit tier runs without torch and gliner: while a unit test module is imported and while a unit test runs, an
`import torch` or `import gliner` (or `from ... import`) executed by the tests or by gliner_jax fails loudly, as it
would in a venv without them, so a unit test that drags one in fails here too.

The guard wraps `builtins.__import__`, which every import statement calls, even for a module already imported (by a
parity file on the same xdist worker, or by transformers, which imports torch for itself where it is installed;
libraries' own imports go through unguarded, as they take their torch-free paths in a venv without torch). Check the
tier in such a venv too: `pytest tests/unit` there (README, Testing)."""

from __future__ import annotations

import builtins
import contextlib

import pytest

BLOCKED = ("torch", "gliner")
# Modules whose imports are checked: the tests and the package.
CHECKED = ("tests", "gliner_jax")


@contextlib.contextmanager
def _blocked():
    original = builtins.__import__

    def guarded(name, globals=None, locals=None, fromlist=(), level=0):
        importer = (globals or {}).get("__name__") or ""
        if level == 0 and name.partition(".")[0] in BLOCKED and importer.partition(".")[0] in CHECKED:
            message = f"{importer} imports {name!r}: unit tests run without torch and gliner (move it to tests/parity)"
            raise ModuleNotFoundError(message, name=name)
        return original(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded
    try:
        yield
    finally:
        builtins.__import__ = original


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    with _blocked():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    with _blocked():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with _blocked():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    with _blocked():
        return (yield)


@pytest.fixture(scope="session")
def processor(tmp_path_factory):
    """A span-mode Processor (max_width 3, max_len 64) on the tokenizer of the reference backbones (trained here,
    without building a model) with gliner's added tokens, for the training pipeline tests."""
    import transformers

    from gliner_jax.testing.builders import train_tokenizer
    from gliner_jax.text.collate import Processor

    directory = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(directory)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    tokenizer.add_tokens(["[FLERT]", "<<ENT>>", "<<SEP>>"], special_tokens=True)
    return Processor(tokenizer, max_width=3, max_len=64)
