"""The one runner (steps/runner.py): read, plan, apply in order; a dry run plans every step and applies none,
says where it would stop, and ends with the first refusal as the one red line."""
from __future__ import annotations

import pytest

from mlflow_self_host.core.errors import UserError
from mlflow_self_host.core.plan import Plan
from mlflow_self_host.steps import runner


def _steps(applied: list, refuse: dict | None = None):
    refuse = refuse or {}

    def step(name: str):
        def plan(_facts):
            if name in refuse:
                raise UserError(refuse[name][0], code=refuse[name][1])
            made = Plan(name)
            made.add("create", f"/{name}")
            return made

        return runner.Step(name, plan, apply_one=lambda change: applied.append(change.target))

    return [step(name) for name in ("host", "image", "job")]


def test_a_run_applies_every_step_in_order():
    applied: list = []
    outcome = runner.run(_steps(applied))
    assert applied == ["/host", "/image", "/job"] and list(outcome.plans) == ["host", "image", "job"]


def test_a_real_run_stops_at_the_first_refusal_with_the_later_steps_unread():
    applied: list = []
    with pytest.raises(UserError) as caught:
        runner.run(_steps(applied, {"image": ("registry unreachable", 7)}))
    assert caught.value.code == 7 and applied == ["/host"]


def test_a_dry_run_plans_every_step_applies_none_and_says_the_first_refusal_once(capsys):
    applied: list = []
    with pytest.raises(UserError) as caught:
        runner.run(_steps(applied, {"image": ("registry unreachable", 7), "job": ("Nomad unreachable", 1)}),
                   dry_run=True)
    assert caught.value.code == 7 and applied == []
    said = capsys.readouterr().err
    assert "/host" in said and said.count("registry unreachable") == 0  # the error itself is the task's red line
    assert "image: would stop here (the error below)" in said
    assert "job: would stop here too: Nomad unreachable" in said
