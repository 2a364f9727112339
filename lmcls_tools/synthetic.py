"""Synthetic data for the tiny world: CoLA-style grammar judgements and ledger lines.

Real CoLA and real ledgers cannot ship with an offline CPU course, so we generate stand-ins with the
same *shape* of difficulty: about 70% acceptable sentences, several realistic error kinds, and an
out-of-domain split whose words and constructions never occur in training. Everything is a pure
function of a seed, so every machine builds the same files.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pandas as pd

#: The kinds of error an unacceptable sentence can carry ("none" marks acceptable ones).
ERROR_KINDS = ("agreement", "pronoun_case", "determiner", "word_order", "missing_word", "doubled_word")
#: Words shared by both domains; everything else belongs to exactly one lexicon.
FUNCTION_WORDS = frozenset("a an the and that who by in at on after every during is are was were do does "
                           "i me he him she her said knows thinks".split())
_CASE_SWAP = {"i": "me", "me": "I", "he": "him", "him": "he", "she": "her", "her": "she"}
#: Verbs that take a person as object ("saw him and me"); odd in the progressive ("is wanting a cup").
_PERSON_VERBS = ("see sees saw seen seeing", "like likes liked liked liking", "want wants wanted wanted wanting",
                 "find finds found found finding")
_SUBJECTS, _OBJECTS = ("she", "he"), ("her", "him")  # "She and I ...", "... saw him and me"


@dataclass(frozen=True)
class Lexicon:
    """One domain's words. Nouns are 'singular plural', verbs 'base 3sg past participle -ing'."""

    names: tuple[str, ...]
    people: tuple[str, ...]
    things: tuple[str, ...]
    verbs: tuple[str, ...]  # transitive, and sensible with any of ``things``
    intransitive: tuple[str, ...]
    moods: tuple[str, ...]  # adjectives for people
    looks: tuple[str, ...]  # adjectives for things
    places: tuple[str, ...]  # 'preposition [the] place'
    times: tuple[str, ...]


IN_DOMAIN = Lexicon(  # home, school and town
    names=tuple("Anna Ben Carla David Emma Frank Grace Henry Jack Kate Leo Maria Nick Paul Rosa Sam".split()),
    people=("teacher teachers", "student students", "farmer farmers", "child children", "baker bakers",
            "neighbor neighbors", "girl girls", "boy boys", "uncle uncles", "aunt aunts"),
    things=("apple apples", "book books", "letter letters", "ball balls", "cake cakes", "bag bags",
            "egg eggs", "orange oranges", "umbrella umbrellas", "onion onions", "box boxes", "cup cups"),
    verbs=("see sees saw seen seeing", "carry carries carried carried carrying", "wash washes washed washed washing",
           "find finds found found finding", "buy buys bought bought buying", "bring brings brought brought bringing",
           "like likes liked liked liking", "drop drops dropped dropped dropping", "sell sells sold sold selling",
           "hold holds held held holding", "want wants wanted wanted wanting", "take takes took taken taking"),
    intransitive=("sleep sleeps slept slept sleeping", "laugh laughs laughed laughed laughing",
                  "wait waits waited waited waiting", "sing sings sang sung singing", "play plays played played playing"),
    moods=tuple("happy tired young quiet busy kind hungry angry".split()),
    looks=tuple("small big red green new clean".split()),
    places=("in the park", "in the kitchen", "at school", "at the market", "in the garden", "at the library",
            "at the station", "on the bus"),
    times=("today", "every morning", "after lunch", "on Sunday", "at home", "after school"),
)
OUT_OF_DOMAIN = Lexicon(  # sea, science and space
    names=tuple("Ingrid Tomas Priya Kenji Amara Dmitri Lucia Omar Yara Felix".split()),
    people=("sailor sailors", "pilot pilots", "scientist scientists", "captain captains", "engineer engineers",
            "astronaut astronauts", "diver divers", "explorer explorers"),
    things=("engine engines", "telescope telescopes", "anchor anchors", "map maps", "sample samples", "radio radios",
            "compass compasses", "instrument instruments", "antenna antennas", "battery batteries"),
    verbs=("repair repairs repaired repaired repairing", "test tests tested tested testing",
           "inspect inspects inspected inspected inspecting", "examine examines examined examined examining",
           "study studies studied studied studying", "check checks checked checked checking",
           "load loads loaded loaded loading", "lift lifts lifted lifted lifting"),
    intransitive=("sail sails sailed sailed sailing", "dive dives dived dived diving",
                  "rest rests rested rested resting", "return returns returned returned returning"),
    moods=tuple("brave curious calm famous nervous".split()),
    looks=tuple("heavy broken frozen ancient rusty".split()),
    places=("in the harbor", "in the laboratory", "on the deck", "at the observatory", "near the reef",
            "in the cockpit"),
    times=("at dawn", "every night", "during the storm", "at midnight"),
)

MIXED = Lexicon(*(a + b for a, b in zip(vars(IN_DOMAIN).values(), vars(OUT_OF_DOMAIN).values())))

Word = tuple[str, str]  # (word, tag); tags: det n ns adj verb aux prep pron name other


class _Sentence:
    """A tagged word list plus the one wrong-agreement alternative, so errors can be planted by role."""

    def __init__(self, rng: random.Random, lex: Lexicon):
        self.rng, self.lex, self.words, self.agree = rng, lex, [], None

    def add(self, *words: Word) -> _Sentence:
        self.words.extend(words)
        return self

    def np(self, pool: tuple[str, ...], plural: bool | None = None, adj: float = 0.3) -> bool:
        """Append a noun phrase ('the red ball', 'an apple', 'the dogs'); returns whether it is plural."""
        sg, pl = self.rng.choice(pool).split()
        plural = self.rng.random() < 0.4 if plural is None else plural
        adjectives = self.lex.moods if pool is self.lex.people else self.lex.looks
        a = self.rng.choice(adjectives) if self.rng.random() < adj else None
        first = a or sg
        det = "the" if plural or self.rng.random() < 0.5 else ("an" if first[0] in "aeiou" else "a")
        self.add((det, "det"), *([(a, "adj")] if a else []), (pl, "ns") if plural else (sg, "n"))
        return plural

    def verb(self, entry: str, tense: str, plural: bool) -> None:
        base, s3, past, part, ing = entry.split()
        if tense == "past":
            self.add((past, "verb"))
        else:  # present: the verb agrees with its subject, so we remember the wrong form
            self.agree = (len(self.words), base if not plural else s3)
            self.add((s3 if not plural else base, "verb"))

    def be(self, plural: bool, tense: str) -> None:
        right, wrong = (("were", "was") if plural else ("was", "were")) if tense == "past" else (
            ("are", "is") if plural else ("is", "are"))
        self.agree = (len(self.words), wrong)
        self.add((right, "aux"))

    def tail(self, p: float = 0.6) -> None:
        """An optional place or time phrase."""
        if self.rng.random() < p:
            if self.rng.random() < 0.5:
                prep, *rest = self.rng.choice(self.lex.places).split()
                self.add((prep, "prep"), *[(w, "det" if w == "the" else "place") for w in rest])
            else:
                self.add(*[(w, "other") for w in self.rng.choice(self.lex.times).split()])

    def text(self, end: str = ".") -> str:
        words = [w for w, _ in self.words]
        return " ".join([words[0][0].upper() + words[0][1:], *words[1:]]) + end


def _svo(s: _Sentence, rng: random.Random, tense: str) -> None:
    """The farmer washed the apples. (shared by both domains, with each domain's words)"""
    s.verb(rng.choice(s.lex.verbs), tense, s.np(s.lex.people))
    s.np(s.lex.things)


def _copula(s: _Sentence, rng: random.Random, tense: str) -> None:
    """The girls are hungry. (shared by both domains)"""
    s.be(s.np(s.lex.people, adj=0.0), tense)
    s.add((rng.choice(s.lex.moods), "adj"))


def _passive(s: _Sentence, rng: random.Random, tense: str) -> None:
    """The cups were carried by the children. (shared by both domains)"""
    s.be(s.np(s.lex.things), tense)
    s.add((rng.choice(s.lex.verbs).split()[3], "verb"), ("by", "prep"))
    s.np(s.lex.people)


def _in_domain(s: _Sentence, rng: random.Random) -> tuple[_Sentence, str, str]:
    """Everyday declaratives: (sentence, construction, source code)."""
    lex, tense, c = s.lex, rng.choice(("present", "past")), rng.randrange(7)
    if c == 0:
        _svo(s, rng, tense)
    elif c == 1:
        _copula(s, rng, tense)
    elif c == 2:  # Anna sells an apple every morning.
        s.add((rng.choice(lex.names), "name"))
        s.verb(rng.choice(lex.verbs), tense, False)
        s.np(lex.things)
    elif c == 3:  # She and I played in the park.
        s.add((rng.choice(_SUBJECTS), "pron"), ("and", "other"), ("I", "pron"))
        s.verb(rng.choice(lex.intransitive), tense, True)
    elif c == 4:  # The teacher saw him and me.
        s.verb(rng.choice(_PERSON_VERBS), tense, s.np(lex.people))
        s.add((rng.choice(_OBJECTS), "pron"), ("and", "other"), ("me", "pron"))
    elif c == 5:  # The children are washing the cups.
        s.be(s.np(lex.people), tense)
        s.add((rng.choice([v for v in lex.verbs if v not in _PERSON_VERBS]).split()[4], "verb"))
        s.np(lex.things)
    else:
        _passive(s, rng, tense)
    s.tail()
    return s, f"in_{c}", ("gj04", "bc01", "ad03", "ks08", "r-67", "b_82", "m_02")[c]


def _out_of_domain(s: _Sentence, rng: random.Random) -> tuple[_Sentence, str, str]:
    """New words throughout, and new constructions: relative clauses, questions, that-clauses."""
    lex, tense, c = s.lex, rng.choice(("present", "past")), rng.randrange(6)
    if c == 0:
        _svo(s, rng, tense)
    elif c == 1:
        _copula(s, rng, tense)
    elif c == 2:  # The sailor who repaired the engine was brave.
        plural = s.np(lex.people, adj=0.0)
        s.add(("who", "other"), (rng.choice(lex.verbs).split()[2], "verb"))
        s.np(lex.things)
        s.be(plural, "past")
        s.add((rng.choice(lex.moods), "adj"))
    elif c == 3:  # Does the pilot test the compass?
        plural = rng.random() < 0.4
        s.agree = (0, "does" if plural else "do")
        s.add(("do" if plural else "does", "aux"))
        s.np(lex.people, plural)
        s.add((rng.choice(lex.verbs).split()[0], "verb"))
        s.np(lex.things)
    elif c == 4:
        _passive(s, rng, tense)
    else:  # Priya said that the divers test the radio. / Kenji knows that he and I repaired the engine.
        s.add((rng.choice(lex.names), "name"), (rng.choice(("said", "knows", "thinks")), "other"), ("that", "other"))
        if rng.random() < 0.5:
            s.verb(rng.choice(lex.verbs), "present", s.np(lex.people))
        else:
            s.add((rng.choice(_SUBJECTS), "pron"), ("and", "other"), ("I", "pron"))
            s.verb(rng.choice(lex.verbs), "past", True)
        s.np(lex.things)
    if c != 3:
        s.tail(0.4)
    return s, f"ood_{c}", ("clc95", "c_13", "w_80", "sgww85", "sks13", "sgww69")[c]


def _plant(s: _Sentence, kind: str, rng: random.Random) -> bool:
    """Turn an acceptable sentence into an unacceptable one of ``kind``; False if the kind does not apply."""
    w, tags = s.words, [t for _, t in s.words]
    at = range(len(tags))
    if kind == "agreement" and s.agree:  # The dogs chases the ball.
        w[s.agree[0]] = (s.agree[1], w[s.agree[0]][1])
    elif kind == "pronoun_case" and "pron" in tags:  # Him and me are going to the store.
        pron = [i for i in at if tags[i] == "pron"]
        for i in pron if rng.random() < 0.5 else [rng.choice(pron)]:
            w[i] = (_CASE_SWAP[w[i][0].lower()], "pron")
    elif kind == "determiner" and "det" in tags:
        i = rng.choice([i for i in at if tags[i] == "det"])
        options = ["the the"]
        if w[i][0] in ("a", "an"):
            options.append("an book")
        if tags[i + 1] == "ns":
            options.append("a apples")
        if tags[i + 1] == "n":
            options.append("drop")
        how = rng.choice(options)
        if how == "the the":
            w.insert(i, w[i])
        elif how == "an book":
            w[i] = ("a" if w[i][0] == "an" else "an", "det")
        elif how == "a apples":
            w[i] = ("an" if w[i + 1][0][0] in "aeiou" else "a", "det")
        else:  # The farmer washed apple.
            del w[i]
    elif kind == "word_order":
        options = []
        if "verb" in tags:  # The dog the ball chased.
            v = tags.index("verb")
            end = next((j for j in range(v + 1, len(tags)) if tags[j] in ("n", "ns")), None)
            if end is not None and all(t in ("det", "adj", "n", "ns") for t in tags[v + 1:end + 1]):
                options.append((v, end))
        options += [(i, i + 1) for i in at[:-1] if tags[i] == "adj" and tags[i + 1] in ("n", "ns")]  # the ball red
        options += [(i, i + 1) for i in at[:-1] if tags[i] == "aux" and tags[i + 1] == "adj"]  # The dogs happy are.
        if not options:
            return False
        i, j = rng.choice(options)
        w[i:j + 1] = w[i + 1:j + 1] + [w[i]]
    elif kind == "missing_word":  # The farmer the apples in the kitchen.
        drop = [i for i in at[1:] if tags[i] in ("aux", "prep") or (tags[i] == "verb" and tags[i - 1] != "aux")]
        if not drop:
            return False
        del w[rng.choice(drop)]
    elif kind == "doubled_word":  # The cat sat sat on the mat.
        i = rng.choice([i for i in at if tags[i] not in ("det", "other")])
        w.insert(i, w[i])
    else:
        return False
    return True


def grammar_sentences(n: int, seed: int, domain: str = "in", acceptable: float = 0.7) -> pd.DataFrame:
    """``n`` distinct labelled sentences: columns source, label, marker, sentence, kind, construction.

    ``domain`` "mix" draws words and constructions from both domains at once ("The sailor washed
    the apples."): pretraining text, in which no word gives the domain away (see ``world``).

    Unacceptable sentences cycle through :data:`ERROR_KINDS`, so every kind is about equally common.
    """
    if domain not in ("in", "out", "mix"):
        raise ValueError(f"domain must be 'in', 'out' or 'mix', got {domain!r}.")
    if not 0.0 <= acceptable <= 1.0:
        raise ValueError(f"acceptable is a fraction between 0 and 1, got {acceptable}.")
    rng = random.Random(f"{seed}-{domain}")
    lex = {"in": IN_DOMAIN, "out": OUT_OF_DOMAIN, "mix": MIXED}[domain]
    builders = {"in": (_in_domain,), "out": (_out_of_domain,), "mix": (_in_domain, _out_of_domain)}[domain]
    n_bad = round(n * (1 - acceptable))
    rows, seen = [], set()
    while len(rows) < n:
        kind = "none" if len(rows) >= n_bad else ERROR_KINDS[len(rows) % len(ERROR_KINDS)]
        s, construction, source = rng.choice(builders)(_Sentence(rng, lex), rng)
        if kind != "none" and not _plant(s, kind, rng):
            continue
        text = s.text("?" if construction == "ood_3" else ".")
        if text in seen:
            continue
        seen.add(text)
        bad = kind != "none"
        rows.append((source, int(not bad), "*" if bad else "", text, kind, construction))
    df = pd.DataFrame(rows, columns=["source", "label", "marker", "sentence", "kind", "construction"])
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def grammar_splits(seed: int = 0, sizes: tuple[int, int, int] = (3000, 500, 500)) -> dict[str, pd.DataFrame]:
    """The three CoLA splits (with extra ``kind`` and ``construction`` columns for error analysis).

    Train and dev share a domain; sentences never repeat across splits.
    """
    both = grammar_sentences(sizes[0] + sizes[1], seed, "in")
    return {
        "in_domain_train": both.iloc[: sizes[0]].reset_index(drop=True),
        "in_domain_dev": both.iloc[sizes[0]:].reset_index(drop=True),
        "out_of_domain_dev": grammar_sentences(sizes[2], seed, "out"),
    }


def content_words(sentence: str) -> set[str]:
    """Lower-cased words of a sentence minus the shared function words: what must differ between domains."""
    return {w.strip(".?").lower() for w in sentence.split()} - FUNCTION_WORDS


# --- ledger lines (notebook 6) ---------------------------------------------------------------------
#: memo -> who typically appears on that line. Some words ("Fee", "Insurance", a bank) sit on both sides.
_INCOME = {
    "Rental Income Unit {unit}": ("Tenant J. Alvarez", "Tenant M. Chen", "Tenant R. Okafor", "City Housing Authority"),
    "Misc. Other Income Deposit Fee": ("Tenant S. Novak", "Tenant M. Chen"),
    "Misc. Other Income Additional Other Income": ("Tenant R. Okafor", "First Harbor Bank"),
    "Laundry Income": ("CoinWash Laundry",),
    "Parking Income": ("ParkRight Garage", "Tenant J. Alvarez"),
    "Late Fee Income": ("Tenant S. Novak", "Tenant R. Okafor"),
    "Interest Income": ("First Harbor Bank",),
    "Pet Rent": ("Tenant M. Chen", "Tenant J. Alvarez"),
    "Application Fee": ("Applicant K. Brandt", "Applicant L. Moreau"),
    "Utility Reimbursement": ("Tenant S. Novak", "Metro Gas"),
    "Insurance Claim Proceeds": ("Summit Insurance",),
}
_EXPENSE = {
    "Office Expenses Employee Relations": ("Staffing Partners", "Corner Bakery"),
    "Repairs - Plumbing": ("Ace Plumbing Co.",),
    "Unit Turnover RR - Appliance - Dishwasher": ("HomeParts Supply", "Ace Plumbing Co."),
    "Marketing Permanent Signage": ("Bright Signs LLC",),
    "Gas - Vacancy": ("Metro Gas",),
    "Other - Check Processing Fees": ("First Harbor Bank",),
    "Property Tax": ("County Tax Office",),
    "Insurance Premium": ("Summit Insurance",),
    "Landscaping": ("Green Acre Landscaping",),
    "Payroll": ("Staffing Partners",),
    "Water & Sewer": ("City Water Dept.",),
    "Pest Control": ("PestAway",),
    "Legal Fees": ("Lowe & Partners LLP",),
}


def ledger_lines(n: int = 1800, seed: int = 0) -> pd.DataFrame:
    """Ledger lines ``text`` (date, counterparty, memo, signed amount) with ``label`` 1 = Income, 0 = Expense.

    Three export conventions mix: bank (expense negative), report (all positive) and credit-normal
    (income negative), so the sign alone is a coin flip; the memo and the counterparty decide.
    """
    rng = random.Random(f"ledger-{seed}")
    rows = []
    for i in range(n):
        label = i % 2
        memo = rng.choice(sorted(_INCOME if label else _EXPENSE))
        party = rng.choice((_INCOME if label else _EXPENSE)[memo])
        if rng.random() < 0.5:  # some exports say which side a line is on, as in "Less: Office Expenses"
            memo = ("Plus: " if label else "Less: ") + memo
        amount = round(rng.uniform(15, 2500), 2)
        sign = {"bank": 1 if label else -1, "report": 1, "credit": -1 if label else 1}[rng.choice(("bank", "report", "credit"))]
        date = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        rows.append((f"{date} {party} {memo.format(unit=rng.randint(101, 412))} {sign * amount:.2f}", label))
    return pd.DataFrame(rows, columns=["text", "label"]).sample(frac=1.0, random_state=seed).reset_index(drop=True)
