"""Minutes per notebook under the full profile on a free Colab T4, computed without a GPU.

    python -m benchmarks.colab_budget          # a table
    python -m benchmarks.colab_budget --json   # {notebook: {"t4_minutes", "loads", "train_examples", "scored_examples"}}

Each notebook's plan (``lmcls_tools.budget.PLANS``) at the full profile's sizes, times the T4
rates in ``lmcls_helpers/measurements/runtime_rates.json``. Every notebook must fit
``budget.CLASS_MINUTES`` (a unit test holds it there).
"""

from __future__ import annotations

import argparse
import json

from lmcls_helpers.profiles import get_profile
from lmcls_tools import budget


def table(runtime: str = "T4") -> dict[str, dict]:
    """Each notebook's plan and its estimated minutes on ``runtime`` under the full profile."""
    profile = get_profile("full", require_device=False)
    rates = budget.load_rates()[runtime]
    rows = {}
    for stem in sorted(budget.PLANS):
        plan = budget.plan_for(stem, profile, dict(budget.COLA_SIZES))
        rows[stem] = {"t4_minutes": round(budget.estimate(plan, rates)["total_s"] / 60, 1), "loads": plan.loads,
                      "train_examples": plan.train_examples, "scored_examples": plan.scored_examples}
        if plan.cut:
            rows[stem]["cut"] = plan.cut
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    rows = table()
    if args.json:
        print(json.dumps({k: {f: v[f] for f in ("t4_minutes", "loads", "train_examples", "scored_examples")}
                          for k, v in rows.items()}, indent=2))
        return
    print(f"full profile on a free Colab T4 (budget {budget.CLASS_MINUTES:.0f} min each, loads included)")
    print(f"{'notebook':<28} {'T4 min':>7} {'loads':>6} {'trained':>8} {'scored':>7}")
    for stem, r in rows.items():
        print(f"{stem:<28} {r['t4_minutes']:>7.1f} {r['loads']:>6} {r['train_examples']:>8,} {r['scored_examples']:>7,}")
    assumed = budget.load_rates()["T4"].assumed
    print(f"T4 rates from the Llama 3 CoLA tutorial's run; assumed, not measured: {', '.join(assumed) or 'none'}")


if __name__ == "__main__":
    main()
