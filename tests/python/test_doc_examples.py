"""Runs every code block of README.md and docs/*.md marked `<!-- runnable -->`, verbatim (issue
15: a documented example cannot drift from the code). Python blocks run in a fresh namespace with
the built module; shell blocks run with bash -euo pipefail from a scratch directory, with
`build/bin/strata` standing for the built CLI ($STRATA_CLI)."""
import os
import pathlib
import re
import subprocess
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"<!-- runnable -->\n```(python|sh)\n(.*?)```", re.S)
EXAMPLES = [(doc.relative_to(ROOT).as_posix(), i, lang, code)
            for doc in DOCS
            for i, (lang, code) in enumerate(BLOCK.findall(doc.read_text()))]


def test_the_docs_have_runnable_examples():
    langs = {lang for _, _, lang, _ in EXAMPLES}
    assert {"python", "sh"} <= langs
    assert any(doc == "README.md" for doc, _, _, _ in EXAMPLES)


@pytest.mark.parametrize("doc,index,lang,code", EXAMPLES,
                         ids=[f"{d}:{i}" for d, i, _, _ in EXAMPLES])
def test_doc_example_runs(doc, index, lang, code):
    if lang == "python":
        exec(compile(code, f"{doc}:runnable-{index}", "exec"), {"__name__": "__doc_example__"})
        return
    cli = os.environ["STRATA_CLI"]
    with tempfile.TemporaryDirectory() as d:
        script = code.replace("build/bin/strata", cli)
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=d,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{doc} block {index} failed:\n{r.stdout}\n{r.stderr}"
