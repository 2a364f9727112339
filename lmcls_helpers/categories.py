"""Ledger lines by category: a five-class task with class names of several tokens (notebook 8).

The ledger of notebook 6 has two labels (Income / Expense). Its memos say more than that: each
belongs to one bookkeeping category, and the category names ("rent and fees", "insurance and
taxes") are of uneven length, mostly several tokens, which is what notebook 8 needs to teach multi-token label
words. The mapping is by memo; a line's memo is found by its exact text, so every line gets one
category and the same one on every machine.
"""

from __future__ import annotations

import pandas as pd

#: Class names as the model reads them after "Category:": the leading space belongs to the name.
CATEGORY_NAMES = (" rent and fees", " utilities", " repairs", " insurance and taxes", " staff and office")

#: Memo (as in ``lmcls_tools.synthetic._INCOME`` / ``_EXPENSE``, "{unit}" cut off) -> index into CATEGORY_NAMES.
MEMO_CATEGORY = {
    "Rental Income Unit ": 0, "Misc. Other Income Deposit Fee": 0, "Misc. Other Income Additional Other Income": 0,
    "Laundry Income": 0, "Parking Income": 0, "Late Fee Income": 0, "Interest Income": 0, "Pet Rent": 0,
    "Application Fee": 0, "Utility Reimbursement": 1, "Gas - Vacancy": 1, "Water & Sewer": 1,
    "Repairs - Plumbing": 2, "Unit Turnover RR - Appliance - Dishwasher": 2, "Landscaping": 2, "Pest Control": 2,
    "Insurance Claim Proceeds": 3, "Property Tax": 3, "Insurance Premium": 3, "Other - Check Processing Fees": 4,
    "Office Expenses Employee Relations": 4, "Marketing Permanent Signage": 4, "Payroll": 4, "Legal Fees": 4,
}

#: Share of the minority class's lines that notebook 8 keeps, so that the classes are clearly imbalanced.
MINORITY, MINORITY_KEEP = 1, 0.25


def category_of(text: str) -> int:
    """The category index of one ledger line; ``ValueError`` unless exactly one known memo occurs in it."""
    hits = [m for m in MEMO_CATEGORY if m in text]
    if len(hits) != 1:
        raise ValueError(f"{text!r} contains {len(hits)} known memos ({hits}): need exactly one. "
                         "Add its memo to lmcls_helpers.categories.MEMO_CATEGORY.")
    return MEMO_CATEGORY[hits[0]]


def ledger_categories(ledger: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Ledger lines with a ``category`` column (0-4), the minority class cut to ``MINORITY_KEEP`` of its lines.

    The cut is made on purpose (seeded, so deterministic): the categories are uneven already, and a
    class with few lines gives notebook 8's imbalance section something to fix.
    """
    frame = ledger.assign(category=[category_of(t) for t in ledger["text"]])
    minority = frame[frame.category == MINORITY]
    dropped = minority.drop(minority.sample(frac=MINORITY_KEEP, random_state=seed).index)
    return frame.drop(dropped.index).reset_index(drop=True)
