"""The synthetic grammar and ledger generators: deterministic, CoLA-shaped, and hard in the right ways."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcls_helpers.data import load_cola, load_ledger, write_cola_tsv
from lmcls_tools import synthetic

SEEDS = st.integers(min_value=0, max_value=10_000)


@pytest.fixture(scope="module")
def splits():
    return synthetic.grammar_splits(seed=0)


def test_same_seed_same_sentences_other_seed_other_sentences():
    a, b = synthetic.grammar_sentences(300, seed=7), synthetic.grammar_sentences(300, seed=7)
    assert a.equals(b)
    assert not a["sentence"].equals(synthetic.grammar_sentences(300, seed=8)["sentence"])
    assert synthetic.ledger_lines(200, seed=3).equals(synthetic.ledger_lines(200, seed=3))


def test_split_sizes_balance_and_labels(splits):
    assert {k: len(v) for k, v in splits.items()} == {"in_domain_train": 3000, "in_domain_dev": 500, "out_of_domain_dev": 500}
    for name, df in splits.items():
        assert 0.65 <= df["label"].mean() <= 0.75, (name, df["label"].mean())
        assert ((df["label"] == 0) == (df["marker"] == "*")).all(), "CoLA marks unacceptable sentences with '*'"
        assert ((df["label"] == 1) == (df["kind"] == "none")).all()


def test_every_error_kind_in_every_split(splits):
    for name, df in splits.items():
        counts = Counter(df.loc[df["label"] == 0, "kind"])
        assert set(counts) == set(synthetic.ERROR_KINDS), (name, counts)
        assert min(counts.values()) >= 10, (name, counts)


def test_no_sentence_repeats_within_or_across_splits(splits):
    sentences = [s for df in splits.values() for s in df["sentence"]]
    assert len(sentences) == len(set(sentences))


def test_lexicons_share_only_function_words():
    def words(lex):
        return {w.lower() for field in vars(lex).values() for entry in field for w in entry.split()}

    shared = words(synthetic.IN_DOMAIN) & words(synthetic.OUT_OF_DOMAIN)
    assert shared <= synthetic.FUNCTION_WORDS, shared


@settings(max_examples=15, deadline=None)
@given(seed_in=SEEDS, seed_out=SEEDS)
def test_out_of_domain_words_never_occur_in_domain(seed_in, seed_out):
    inside = synthetic.grammar_sentences(150, seed_in, "in")["sentence"]
    outside = synthetic.grammar_sentences(150, seed_out, "out")["sentence"]
    in_words = set().union(*map(synthetic.content_words, inside))
    out_words = set().union(*map(synthetic.content_words, outside))
    assert in_words and out_words
    assert not in_words & out_words, in_words & out_words


def test_out_of_domain_has_constructions_training_lacks(splits):
    train, ood = splits["in_domain_train"], splits["out_of_domain_dev"]
    for cue in (" who ", " that ", "?"):
        assert not train["sentence"].str.contains(cue, regex=False).any(), cue
        assert ood["sentence"].str.contains(cue, regex=False).any(), cue


def _pair(seed: int, domain: str, kind: str):
    """(acceptable words, unacceptable words) for one sentence, or None if the kind does not apply."""
    rng = random.Random(seed)
    lex, make = (synthetic.IN_DOMAIN, synthetic._in_domain) if domain == "in" else (synthetic.OUT_OF_DOMAIN, synthetic._out_of_domain)
    sentence, _, _ = make(synthetic._Sentence(rng, lex), rng)
    before = [w for w, _ in sentence.words]
    if not synthetic._plant(sentence, kind, rng):
        return None
    return before, [w for w, _ in sentence.words]


@settings(max_examples=60, deadline=None)
@given(seed=SEEDS, domain=st.sampled_from(["in", "out"]), kind=st.sampled_from(synthetic.ERROR_KINDS))
def test_each_error_kind_changes_the_sentence_the_way_it_says(seed, domain, kind):
    pair = _pair(seed, domain, kind)
    if pair is None:
        return
    good, bad = pair
    assert good != bad
    changed = [(g, b) for g, b in zip(good, bad) if g != b]
    if kind in ("agreement", "pronoun_case"):
        assert len(good) == len(bad) and changed
        if kind == "agreement":
            assert len(changed) == 1
        else:
            assert all(g.lower() in ("i", "me", "he", "him", "she", "her") for g, _ in changed), changed
    elif kind == "word_order":
        assert sorted(good) == sorted(bad)
    elif kind == "missing_word":
        assert len(bad) == len(good) - 1 and any(good[:i] + good[i + 1:] == bad for i in range(len(good)))
    elif kind == "doubled_word":
        assert len(bad) == len(good) + 1 and any(bad[i] == bad[i + 1] for i in range(len(bad) - 1))
    else:  # determiner: only articles are added, dropped or swapped
        assert [w for w in good if w.lower() not in ("a", "an", "the")] == [w for w in bad if w.lower() not in ("a", "an", "the")]


def test_tsv_round_trips_through_load_cola(splits, tmp_path):
    for name, df in splits.items():
        write_cola_tsv(df, tmp_path / "raw" / f"{name}.tsv")
    loaded = load_cola(tmp_path)
    for name, df in splits.items():
        assert loaded[name].equals(df[["source", "label", "marker", "sentence"]]), name
    first = (tmp_path / "raw" / "in_domain_train.tsv").read_text().splitlines()[0].split("\t")
    assert len(first) == 4 and first[1] in ("0", "1"), "no header, four fields, like CoLA's raw files"


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="domain"):
        synthetic.grammar_sentences(10, 0, "space")
    with pytest.raises(ValueError, match="fraction"):
        synthetic.grammar_sentences(10, 0, acceptable=70)


def test_ledger_schema_balance_and_no_single_character_shortcut(tmp_path):
    df = synthetic.ledger_lines(1800, seed=0)
    df.to_csv(tmp_path / "ledger.csv", index=False)
    assert load_ledger(tmp_path / "ledger.csv").equals(df)
    assert list(df.columns) == ["text", "label"] and set(df["label"]) == {0, 1}
    assert df["label"].mean() == pytest.approx(0.5, abs=0.01)
    positive = df["text"].str.split().str[-1].astype(float) > 0
    assert 0.35 < (positive == df["label"].astype(bool)).mean() < 0.65, "the sign alone must not decide the label"
    prefixed = df["text"].str.contains("Plus: |Less: ")
    assert 0.35 < prefixed.mean() < 0.65, "a Plus:/Less: prefix marks only some lines"
    assert df["text"].str.match(r"^2024-\d\d-\d\d ").all()
