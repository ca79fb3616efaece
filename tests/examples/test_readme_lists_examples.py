"""Every runnable example is where a user looks for it (linked from the README) and is run by the example tests."""

from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUNNABLE = sorted(p.name for p in (ROOT / "examples").glob("*.py") if "__main__" in p.read_text())


def test_there_are_runnable_examples():
    assert "compress_trained_model.py" in RUNNABLE and len(RUNNABLE) >= 5


@pytest.mark.parametrize("name", RUNNABLE)
def test_each_runnable_example_is_linked_from_the_readme_and_run_by_a_test(name):
    assert f"(examples/{name})" in (ROOT / "README.md").read_text()
    assert f"def test_{name.removesuffix('.py')}(" in (ROOT / "tests/examples/test_examples.py").read_text()
