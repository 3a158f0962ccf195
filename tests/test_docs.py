"""The front page and the documents: every local link leads somewhere, and the quick start is two commands."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "CHANGES.md", ROOT / "datasets" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_anchor(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def _local_links(path: Path):
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code:
            yield from (target for target in LINK.findall(line) if not re.match(r"[a-z]+:", target))


@pytest.mark.parametrize("document", DOCUMENTS, ids=[str(p.relative_to(ROOT)) for p in DOCUMENTS])
def test_local_links_and_anchors_exist(document):
    for target in _local_links(document):
        file_part, _, anchor = target.partition("#")
        linked = (document.parent / file_part).resolve() if file_part else document
        assert linked.exists(), f"{document.name} links to missing {target}"
        if anchor:
            assert anchor in _anchors(linked), f"{document.name} links to {target}: no such heading in {linked.name}"


def test_readme_quick_start_is_two_commands():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quick_start, re.S)[1]
    assert [line.split("#")[0].strip() for line in block.strip().splitlines()] == ["make lab", "make test"]


def test_no_placeholders_left_in_the_documents():
    for document in DOCUMENTS:
        assert not re.search(r"\bMEASURE_\w+|\bTODO\b|\bTBD\b", document.read_text()), document.name
