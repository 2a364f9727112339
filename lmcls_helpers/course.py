"""Each notebook's first and last lines: the profile and what it needs, the context a pasted error needs, the time plan.

The lesson starts after :func:`start`. The time plan and its check live in the course tooling
(``lmcls_tools.budget``), not in this package: they are bookkeeping around the lesson.
"""

from __future__ import annotations

from . import results
from .hub import hub_login
from .profiles import Profile, ensure_world, environment_report, get_profile


def start(stem: str, profile_name: str | None = None) -> Profile:
    """Choose the profile, build or fetch what it reads, log in where it loads a gated model, print the plan."""
    from lmcls_tools import budget

    profile = get_profile(profile_name)
    ensure_world(profile)  # builds the tiny world under build/ once, then reuses it
    results.start(stem)
    print(environment_report(profile))
    if (plan := budget.plan_for(stem, profile)).loads:  # a notebook that loads no model needs no hub access
        print(hub_login(profile))
    print(budget.report(stem, profile, plan))
    return profile


def finish(stem: str, profile: Profile) -> None:
    """The last line: time taken against the plan printed by :func:`start`, and the planned model loads checked."""
    from lmcls_tools import budget

    print(budget.finish(stem, profile))
