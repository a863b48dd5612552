"""The README's "From Python" snippet runs as written, at tiny sizes."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = {"epochs=100": "epochs=1"}  # the only change: each must occur exactly once


@pytest.mark.slow
def test_the_from_python_snippet_runs(capsys):
    text = README.read_text()
    section = text.split("## From Python", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    for old, new in TINY.items():
        assert snippet.count(old) == 1, f"{old!r} should occur once in the README snippet"
        snippet = snippet.replace(old, new)
    exec(compile(snippet, str(README), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2 and all(float(v) < 0 for v in printed), printed  # the two log-likelihoods
