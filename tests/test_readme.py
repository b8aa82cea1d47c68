"""The README a newcomer reads: short, its equation pointers on the lines that compute them, its links alive."""

import re

from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()


def test_readme_is_short():
    assert len(README.splitlines()) <= 200


def test_each_equation_points_at_the_line_that_computes_it():
    """`file:line` of Eqs. 1-5: the line itself says which equation it is."""
    found = re.findall(r"Eq\. (\d)[^|]*\| `([\w/]+\.py):(\d+)`", README)
    assert sorted(n for n, *_ in found) == ["1", "2", "3", "4", "5"], found
    for n, path, line in found:
        text = (ROOT / path).read_text().splitlines()[int(line) - 1]
        assert f"Eq. {n}" in text, (n, path, line, text)


def test_every_local_link_and_picture_exists():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    assert "docs/report-first-screen.png" in links and "docs/RUNS.md" in links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing
