"""What a reader meets in the notebooks' markdown: chapter length, no lab log, the sources named and linked.

A notebook is a chapter for one class hour: at most about 2,200 words of markdown. Its prose speaks
about the lesson, not about a run (no "this run printed", no machine, date or issue number), and
the Llama 3 tutorial it builds on is linked where a notebook first mentions it.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

MAX_WORDS = 2200
#: Phrases of a lab log rather than a lesson; the suite may use a few ("the tiny profile" in a box about the worlds).
LAB_LOG = re.compile(r"(this run printed|on the tiny profile|on an idle|2-core|AMD EPYC|Zen \d|Xeon|\bH200\b)", re.I)
MAX_LAB_LOG = 10
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
ISSUE = re.compile(r"\bissue \d+\b", re.I)
LLAMA3_TUTORIAL = ("https://github.com/chrisjmccormick/llm-tuning-examples/blob/main/sentence-classification/"
                   "Fine-Tuning%20Llama%203%20for%20Sentence%20Classification.ipynb")
#: A mention of a tutorial that is not the ledger one (which has no known address and is named instead).
TUTORIAL = re.compile(r"(?<!ledger\s)(?<!ledger-line\s)\btutorial", re.I)


def markdown(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def code(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_nine_chapters():
    assert [p.stem[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, 10)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_chapter_fits_a_class_hour(path):
    words = len(re.findall(r"\S+", markdown(path)))
    assert words <= MAX_WORDS, f"{path.name}: {words} words of markdown (at most {MAX_WORDS}); cut, or move to docs/"


def test_prose_is_a_lesson_not_a_lab_log():
    found = {p.stem: LAB_LOG.findall(markdown(p)) for p in NOTEBOOKS}
    assert sum(map(len, found.values())) <= MAX_LAB_LOG, {k: v for k, v in found.items() if v}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_dates_or_issue_numbers(path):
    text = markdown(path) + code(path)
    assert not DATE.findall(text) and not ISSUE.findall(text), f"{path.name}: {DATE.findall(text) + ISSUE.findall(text)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_llama3_tutorial_is_linked_at_its_first_mention(path):
    text = markdown(path)
    if not (first := TUTORIAL.search(text)):
        pytest.skip("this notebook does not mention the Llama 3 tutorial")
    paragraph_end = text.find("\n\n", first.end())
    assert LLAMA3_TUTORIAL in text[: None if paragraph_end < 0 else paragraph_end], (
        f"{path.name}: the first mention of the tutorial ({text[max(0, first.start() - 60):first.end() + 20]!r}) "
        f"comes without its link; name and link it there: {LLAMA3_TUTORIAL}")
