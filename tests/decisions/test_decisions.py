"""Every case file under tests/decisions/<area>/ through its area's pure make_plan (see README.md)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mlflow_self_host.core.errors import UserError
from mlflow_self_host.core.settings import Settings
from tests.decisions.areas import AREAS

HERE = Path(__file__).resolve().parent
CASES = sorted(HERE.glob("*/*.json"))


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def test_every_area_folder_has_an_adapter_and_cases():
    folders = {p.name for p in HERE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == set(AREAS), "a folder without an adapter in areas.py, or an adapter without cases"
    for area in AREAS:
        assert list((HERE / area).glob("*.json")), f"no case files for {area}"


def _op_fields(op) -> dict:
    if op is None:
        return {}
    if dataclasses.is_dataclass(op):
        return {k: v.decode() if isinstance(v, bytes) else list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(op).items()}  # as JSON has them: text, lists
    return dict(op) if isinstance(op, dict) else {"value": op}


@pytest.mark.parametrize("path", CASES, ids=_id)
def test_case(path: Path):
    case = json.loads(path.read_text())
    assert case.get("about"), f"{path.name}: say what the case shows in 'about'"
    settings = Settings.load(env={}, overrides=case.get("settings", {}))
    adapter = AREAS[path.parent.name]
    if "error" in case:
        with pytest.raises(UserError) as caught:
            adapter(settings, case.get("facts", {}), case.get("args", {}))
        assert case["error"]["message"] in str(caught.value)
        assert caught.value.code == case["error"].get("code", 1)
        return
    plan = adapter(settings, case.get("facts", {}), case.get("args", {}))
    got = [(c.action, c.target) for c in plan.changes]
    assert got == [(c["action"], c["target"]) for c in case["changes"]]
    for change, wanted in zip(plan.changes, case["changes"]):
        if "detail" in wanted:
            assert change.detail == wanted["detail"]
        if "diff" in wanted:
            assert wanted["diff"] in change.diff
        fields = _op_fields(change.op)
        for key, value in wanted.get("op", {}).items():
            assert fields.get(key) == value, f"{change.target}: op {key}"
    if "reason" in case:
        assert plan.empty and plan.reason == case["reason"]
    for note in case.get("notes", []):
        assert any(note in n for n in plan.notes), note
