"""The lab scenario's judgement of a VM-Series fleet's audit answers (gwlb_lab.scenario.panlogs_checks):
it passes when SLS holds what the firewalls sent and the clients did, and fails, saying what,
when a log is missing, pending or refused, a threat is not high, or denied sessions and threats
disagree."""

from __future__ import annotations

import copy
from typing import Any

from gwlb_lab.scenario import panlogs_checks

FW1, FW2 = "007900000001", "007900000002"


def firewalls(traffic: tuple[int, int] = (40, 25), threats: tuple[int, int] = (3, 2)) -> dict[str, Any]:
    return {
        "intake": {"200": sum(traffic) + sum(threats)},
        "firewalls": {
            FW1: {"traffic_generated": traffic[0], "traffic_sent": traffic[0], "threat_generated": threats[0],
                  "threat_sent": threats[0], "pending": 0},
            FW2: {"traffic_generated": traffic[1], "traffic_sent": traffic[1], "threat_generated": threats[1],
                  "threat_sent": threats[1], "pending": 0},
        },
    }


def answers(traffic: tuple[int, int] = (40, 25), threats: tuple[int, int] = (3, 2)) -> dict[str, Any]:
    """What the audit queries answer when SLS holds exactly those logs (SLS answers text)."""
    return {
        "appliance-traffic": {"rows": [{"serial": FW1, "records": str(traffic[0])},
                                       {"serial": FW2, "records": str(traffic[1])}]},
        "threats-blocked-by-firewall": {"rows": [{"serial": FW1, "threats": str(threats[0])},
                                                 {"serial": FW2, "threats": str(threats[1])}]},
        "threats-blocked-by-severity": {"rows": [{"severity": "high", "threats": str(sum(threats))}]},
        "denied": {"rows": [
            {"rule": "gwlb-deny-admin", "dst_port": "8443", "serial": FW1, "flows": str(threats[0])},
            {"rule": "gwlb-deny-admin", "dst_port": "8443", "serial": FW2, "flows": str(threats[1])},
        ]},
        "conversations": {"rows": [{"dst_port": "80", "action": "allow", "serial": FW1},
                                   {"dst_port": "80", "action": "allow", "serial": FW2}]},
    }


def failed(checks: list[tuple[bool, str]]) -> list[str]:
    return [text for passed, text in checks if not passed]


def test_answers_that_account_for_every_log_pass() -> None:
    checks = panlogs_checks(answers(), firewalls(), firewalls(), denied_attempts=6)
    assert len(checks) == 6 and failed(checks) == []


def test_a_log_sent_while_the_queries_ran_is_within_the_bounds() -> None:
    after = firewalls(traffic=(41, 25))
    assert failed(panlogs_checks(answers(traffic=(41, 25)), firewalls(), after, 6)) == []
    assert failed(panlogs_checks(answers(), firewalls(), after, 6)) == []


def test_a_record_missing_from_sls_fails_naming_the_query() -> None:
    [text] = failed(panlogs_checks(answers(traffic=(39, 25)), firewalls(), firewalls(), 6))
    assert text.startswith("appliance-traffic: records per serial")


def test_a_pending_or_refused_log_fails() -> None:
    for key in ("pending", "traffic_refused"):
        after = firewalls()
        after["firewalls"][FW2][key] = 1
        [text] = failed(panlogs_checks(answers(), firewalls(), after, 6))
        assert text.startswith("every log") and f"'{key}': 1" in text


def test_threats_that_are_not_all_high_or_not_the_denied_sessions_fail() -> None:
    medium = answers()
    medium["threats-blocked-by-severity"]["rows"].append({"severity": "medium", "threats": "1"})
    assert [t.split(":")[0] for t in failed(panlogs_checks(medium, firewalls(), firewalls(), 6))] == [
        "threats-blocked-by-severity"]
    fewer = copy.deepcopy(answers())
    fewer["denied"]["rows"].pop()
    assert [t.split(":")[0] for t in failed(panlogs_checks(fewer, firewalls(), firewalls(), 6))] == ["denied"]
    too_few_attempts = panlogs_checks(answers(), firewalls(), firewalls(), 4)
    assert [t.split(":")[0] for t in failed(too_few_attempts)] == ["denied"]


def test_no_firewall_or_no_web_session_fails() -> None:
    assert failed(panlogs_checks({}, {}, {}, 0))
    quiet = answers()
    quiet["conversations"]["rows"] = []
    assert [t.split(":")[0] for t in failed(panlogs_checks(quiet, firewalls(), firewalls(), 6))] == [
        "conversations"]
