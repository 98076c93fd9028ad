"""The plan for a CNAME, from the entries a backend holds (the same form on Pi-hole and dnsmasq)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from mlflow_self_host.adapters.dns.record import Record, make_record_plan, wanted_cname
from mlflow_self_host.core.errors import UserError
from mlflow_self_host.core.settings import Settings

WANTED = Record(("mlflow.lan",), "traefik.lan")


def applied(entries, plan):
    out = list(entries)
    for action, entry in plan.ops:
        if action == "delete":
            out.remove(entry)
        else:
            out.append(entry)
    return out


def test_missing_record_is_added():
    plan = make_record_plan(["nas.lan,traefik.lan"], WANTED)
    assert plan.ops == [("add", "mlflow.lan,traefik.lan")]
    assert [(c.action, c.target) for c in plan] == [("create", "mlflow.lan")]


def test_other_target_is_replaced():
    plan = make_record_plan(["mlflow.lan,old-proxy.lan"], WANTED)
    assert plan.ops == [("delete", "mlflow.lan,old-proxy.lan"), ("add", "mlflow.lan,traefik.lan")]
    assert [c.action for c in plan] == ["replace"] and "old-proxy.lan" in plan.changes[0].detail


def test_right_record_is_no_change_whatever_the_case_or_trailing_dot():
    assert make_record_plan(["MLflow.lan,traefik.lan."], WANTED).empty


def test_ttl_is_part_of_the_record():
    with_ttl = Record(("mlflow.lan",), "traefik.lan", 300)
    assert make_record_plan(["mlflow.lan,traefik.lan,300"], with_ttl).empty
    assert make_record_plan(["mlflow.lan,traefik.lan"], with_ttl).ops[-1] == ("add", "mlflow.lan,traefik.lan,300")
    assert make_record_plan(["mlflow.lan,traefik.lan,300"], WANTED).ops[0] == ("delete", "mlflow.lan,traefik.lan,300")


def test_shared_entry_keeps_its_other_names():
    plan = make_record_plan(["nas.lan,mlflow.lan,old.lan"], WANTED)
    assert plan.ops == [("delete", "nas.lan,mlflow.lan,old.lan"), ("add", "nas.lan,old.lan"),
                        ("add", "mlflow.lan,traefik.lan")]


def test_remove_takes_every_entry_naming_the_domain():
    entries = ["mlflow.lan,traefik.lan", "nas.lan,traefik.lan", "x.lan,mlflow.lan,other.lan"]
    after = applied(entries, make_record_plan(entries, WANTED, remove=True))
    assert sorted(after) == ["nas.lan,traefik.lan", "x.lan,other.lan"]
    assert make_record_plan(after, WANTED, remove=True).empty


def test_duplicates_are_taken_away_when_one_is_right():
    plan = make_record_plan(["mlflow.lan,old.lan", "mlflow.lan,traefik.lan"], WANTED)
    assert plan.ops == [("delete", "mlflow.lan,old.lan")] and plan.changes[0].action == "delete"


NAMES = st.sampled_from(["mlflow.lan", "MLFLOW.lan", "nas.lan", "a.lan", "traefik.lan", "old.lan"])
ENTRY = st.builds(lambda names, target, ttl: ",".join(names + [target] + ([str(ttl)] if ttl else [])),
                  st.lists(NAMES, min_size=1, max_size=3), NAMES, st.sampled_from([None, 300]))


@hsettings(max_examples=200, deadline=None)
@given(st.lists(ENTRY, max_size=5, unique=True), st.booleans())
def test_applying_the_plan_converges_and_keeps_other_names(entries, remove):
    after = applied(entries, make_record_plan(entries, WANTED, remove=remove))
    assert make_record_plan(after, WANTED, remove=remove).empty  # running twice changes nothing
    naming = [Record.parse(e) for e in after if Record.parse(e) and Record.parse(e).names_domain("mlflow.lan")]
    assert naming == ([] if remove else [Record(naming[0].names, "traefik.lan")])
    before = {(n.lower(), r.target.lower()) for e in entries if (r := Record.parse(e)) for n in r.names}
    kept = {(n.lower(), r.target.lower()) for e in after if (r := Record.parse(e)) for n in r.names}
    assert {p for p in before if p[0] != "mlflow.lan"} <= kept


@pytest.mark.parametrize("overrides, fragment", [
    ({"domain": ""}, "domain"),
    ({"dns_target": "traefik.lan,evil.lan"}, "dns_target"),
    ({"domain": "traefik.lan"}, "cannot point at itself"),
    ({"dns_ttl": -5}, "dns_ttl"),
])
def test_bad_record_settings_are_refused(project_env, overrides, fragment):
    with pytest.raises(UserError, match=fragment):
        wanted_cname(Settings.load(env={}, overrides=overrides))
