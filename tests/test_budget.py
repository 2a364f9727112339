"""Time budgets: every notebook has a plan, and under the full profile each fits a class on a free T4."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import colab_budget
from lmcls_helpers.profiles import get_profile
from lmcls_tools import budget

STEMS = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "nbs_src").glob("*.py"))


def test_every_notebook_has_a_plan():
    assert sorted(budget.PLANS) == STEMS


@pytest.mark.parametrize("stem", STEMS)
def test_each_notebook_fits_a_class_hour_on_a_t4_under_the_full_profile(stem):
    profile = get_profile("full", require_device=False)
    plan = budget.plan_for(stem, profile, dict(budget.COLA_SIZES))
    minutes = budget.estimate(plan, budget.load_rates()["T4"])["total_s"] / 60
    assert minutes <= budget.CLASS_MINUTES, f"{stem}: {minutes:.1f} T4 minutes ({plan})"


def test_estimate_is_rates_times_work():
    rates = budget.Rates("x", load_s=100, reload_s=10, train_example_s=0.5, score_example_s=0.1, seq_len=50, source="",
                         checkpointing_factor=4 / 3)
    est = budget.estimate(budget.Plan(loads=3, train_examples=10, scored_examples=20, seq_len=100), rates)
    assert est == {"install_s": 0.0, "load_s": 100, "reload_s": 20, "train_s": 10.0, "score_s": 4.0, "overhead_s": 0.0,
                   "total_s": 134.0}
    on_colab = budget.estimate(budget.Plan(loads=0, train_examples=0, scored_examples=0),
                               budget.Rates("z", 1, 1, 1, 1, 50, "", install_s=40.0))
    assert on_colab["total_s"] == 40.0  # a fresh Colab runtime installs before anything else
    fixed = budget.estimate(budget.Plan(loads=0, train_examples=0, scored_examples=0),
                            budget.Rates("y", 1, 1, 1, 1, 50, "", overhead_s=6.5))
    assert fixed["total_s"] == 6.5  # a notebook with nothing planned still starts a kernel and imports
    slower = budget.estimate(budget.Plan(loads=0, train_examples=30, scored_examples=0, seq_len=50, recompute=True), rates)
    assert slower["train_s"] == pytest.approx(20.0) and slower["load_s"] == 0


def test_shipped_rates_name_their_source_and_assumptions():
    rates = budget.load_rates()
    assert {"T4", "H100", "CPU (tiny)"} <= set(rates)
    for r in rates.values():
        assert r.source and r.train_example_s > 0 and r.score_example_s > 0
        assert set(r.assumed) <= {"load_s", "reload_s", "train_example_s", "score_example_s", "checkpointing_factor",
                                  "install_s"}
    assert rates["T4"].install_s > 0, "a Colab notebook's plan counts the Colab cell's installs"


def test_colab_budget_json_lists_every_notebook_under_the_budget(capsys):
    import json

    colab_budget.main(["--json"])
    table = json.loads(capsys.readouterr().out)
    assert sorted(table) == STEMS
    for row in table.values():
        assert set(row) == {"t4_minutes", "loads", "train_examples", "scored_examples"}
        assert row["t4_minutes"] <= budget.CLASS_MINUTES


def test_unknown_notebooks_and_drifting_plans_are_named(monkeypatch):
    profile = get_profile("tiny")
    with pytest.raises(ValueError, match="No time plan"):
        budget.plan_for("99_nothing", profile)
    monkeypatch.setattr(budget, "_loads_before", {})
    monkeypatch.setattr("lmcls_helpers.models._LOADS", {"count": 7})
    with pytest.raises(AssertionError, match="loaded 7 base model"):
        budget.check_loads("02_prompt_scoring", profile)
    assert "min on CPU (tiny)" in budget.report("02_prompt_scoring", profile)


def test_loads_count_from_the_plan_line_so_a_world_built_before_it_is_not_counted(monkeypatch):
    """On Colab the first notebook builds the tiny world in its own kernel, loading a model to check it."""
    profile = get_profile("tiny")
    monkeypatch.setattr("lmcls_helpers.models._LOADS", {"count": 1})  # the world build's load
    budget.report("02_prompt_scoring", profile)
    monkeypatch.setattr("lmcls_helpers.models._LOADS", {"count": 2})  # the notebook's own one load
    assert budget.check_loads("02_prompt_scoring", profile) == 1


def test_notebook_4_pays_for_recomputation_only_where_the_profile_checkpoints():
    tiny = get_profile("tiny")
    assert not tiny.gradient_checkpointing and not budget.plan_for("04_training_loop", tiny).recompute
    t4 = get_profile("full", require_device=False)  # a T4 holds micro-batch 8 without checkpointing (memory.fits)
    assert budget.plan_for("04_training_loop", t4).recompute == t4.gradient_checkpointing


def test_the_small_profile_is_planned_at_its_own_cpu_rates():
    small = get_profile("small", require_device=False)
    assert budget.this_runtime(small) == "CPU (small)" and budget.this_runtime(get_profile("tiny")) == "CPU (tiny)"
    minutes = float(budget.report("04_training_loop", small).split("about ")[-1].split(" min")[0])
    assert 5 < minutes < 30, f"notebook 4 on the small profile: {minutes} min planned"


def test_planned_ledger_size_is_the_worlds():
    """Without a built ledger (planning from a fresh clone), notebook 7's plan counts the lines the world writes."""
    from lmcls_tools.world import SIZES

    assert budget.LEDGER_SIZE == SIZES["ledger"]


def test_cpu_rates_are_counted_at_their_profiles_prompt_length():
    """A rate measured at one prompt length and planned at another would scale every estimate by their ratio."""
    rates = budget.load_rates()
    for name in ("tiny", "small"):  # tiny's rates were timed on 48-token prompts: within 5%
        tokens = get_profile(name, require_device=False).prompt_tokens
        assert rates[f"CPU ({name})"].seq_len == pytest.approx(tokens, rel=0.05), name


def test_prompt_variants_are_weighed_by_their_length_in_tokens():
    """Notebook 2 weighs its longer instruction prompts by characters; tokens must follow them within 10%."""
    from lmcls_helpers.prompts import PATTERN, VARIANTS
    from lmcls_helpers.tokens import load_tokenizer

    tokenizer = load_tokenizer(get_profile("tiny"))
    sentence = "The book that I read yesterday was long."
    by_tokens = sum(len(tokenizer(v.format(sentence=sentence)).input_ids) for v in VARIANTS.values())
    by_tokens /= len(tokenizer(PATTERN.format(sentence=sentence)).input_ids)
    assert budget.variants_weight(len(sentence)) == pytest.approx(by_tokens, rel=0.10)


def test_readme_t4_table_is_the_plans(capsys):
    """The README's class-hour table is what colab_budget prints: a change to a plan must reach it."""
    import json
    import re

    colab_budget.main(["--json"])
    table = json.loads(capsys.readouterr().out)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for stem, row in table.items():
        line = re.search(rf"^\| {stem} \| ([\d.]+) \| (\d+) \| ([\d,]+) \| ([\d,]+) \|", readme, re.MULTILINE)
        assert line, f"README's T4 table has no row for {stem}"
        quoted = [float(line[1]), *(int(x.replace(",", "")) for x in line.groups()[1:])]
        assert quoted == [round(row["t4_minutes"], 1), row["loads"], row["train_examples"], row["scored_examples"]], stem
