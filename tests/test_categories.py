"""Ledger categories (notebook 8): every line gets exactly one category, the same on every run."""

from __future__ import annotations

import pandas as pd
import pytest

from lmcls_helpers.categories import CATEGORY_NAMES, MEMO_CATEGORY, MINORITY, category_of, ledger_categories
from lmcls_tools import synthetic


def test_every_memo_of_the_generator_has_a_category():
    memos = {m.split("{")[0] for m in (*synthetic._INCOME, *synthetic._EXPENSE)}
    assert memos == set(MEMO_CATEGORY)
    assert set(MEMO_CATEGORY.values()) == set(range(len(CATEGORY_NAMES)))
    assert all(name.startswith(" ") for name in CATEGORY_NAMES), "the leading space belongs to the class name"


def test_every_ledger_line_gets_exactly_one_category():
    ledger = synthetic.ledger_lines(600, seed=3)
    cats = [category_of(t) for t in ledger.text]  # raises unless exactly one memo matches
    assert len(cats) == len(ledger) and set(cats) <= set(range(len(CATEGORY_NAMES)))
    with pytest.raises(ValueError, match="exactly one"):
        category_of("2024-01-01 Nobody Something else 10.00")


def test_ledger_categories_is_deterministic_and_imbalanced():
    ledger = synthetic.ledger_lines(900, seed=1)
    a, b = ledger_categories(ledger, seed=42), ledger_categories(ledger, seed=42)
    pd.testing.assert_frame_equal(a, b)
    counts = a.category.value_counts()
    full = pd.Series([category_of(t) for t in ledger.text]).value_counts()
    assert counts[MINORITY] == round(0.25 * full[MINORITY]), "a quarter of the minority class is kept"
    assert counts.idxmin() == MINORITY
    assert (counts.drop(MINORITY) == full.drop(MINORITY)).all(), "the other classes keep every line"
