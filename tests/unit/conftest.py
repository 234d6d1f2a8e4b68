"""The unit tier runs without torch and gliner: while a unit test module is imported and while a unit test runs,
importing either fails loudly (as it would in a venv without them), so a unit test that drags one in fails here too.

The blocker hands out a module spec whose loader raises, so `importlib.util.find_spec` still sees an installed
package (transformers' availability checks keep their answer for the rest of the session) and a guarded
`try: import torch` in a library takes its except branch. A module already imported by an earlier test in the same
process (a parity file on the same xdist worker) is not blocked: the torch-free venv check (`pytest tests/unit`
there) covers that."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

import pytest

# Only what this venv has: where a package is missing, the import system already says so.
BLOCKED = tuple(name for name in ("torch", "gliner") if importlib.util.find_spec(name) is not None)


class _Refuse(importlib.abc.Loader):
    def create_module(self, spec):
        raise ModuleNotFoundError(
            f"unit tests run without {spec.name!r}: move this test to tests/parity", name=spec.name
        )

    def exec_module(self, module):  # never reached
        raise AssertionError


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(fullname, _Refuse())
        return None


@contextlib.contextmanager
def _blocked():
    blocker = _Blocker()
    sys.meta_path.insert(0, blocker)
    try:
        yield
    finally:
        sys.meta_path.remove(blocker)


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

    from gliner_jax.processing import Processor
    from gliner_jax.testing.builders import train_tokenizer

    directory = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(directory)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    tokenizer.add_tokens(["[FLERT]", "<<ENT>>", "<<SEP>>"], special_tokens=True)
    return Processor(tokenizer, max_width=3, max_len=64)
