"""Runs every Python block of docs/client-api.md marked `<!-- runnable -->`, verbatim (issue 15:
a documented example cannot drift from the code). Each block runs in a fresh namespace."""
import pathlib
import re

import pytest

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "client-api.md"
BLOCKS = re.findall(r"<!-- runnable -->\n```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_doc_has_runnable_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_doc_example_runs(index):
    exec(compile(BLOCKS[index], f"{DOC}:runnable-{index}", "exec"), {"__name__": "__doc_example__"})
