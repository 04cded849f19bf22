"""`sender demo` end to end: its summary agrees with what the fake inbox and ledger saw."""

from __future__ import annotations

import orjson

from tests.integration.support import run_cli


def test_demo_runs_a_campaign_through_pause_resume_and_an_inbox_outage_and_reports_it() -> None:
    result = run_cli("demo", "--json")

    assert result.returncode == 0, result.stderr[-2000:]
    summary = orjson.loads(result.stdout)
    assert summary["contacts"] == 3100
    assert summary["failed_by_reason"] == {"dispatch_exhausted_retries": 6, "http_4xx: 400": 1}
    assert summary["sent"] == summary["contacts"] - 7
    # Every contact the ledger calls sent got a 2xx from the inbox, and no other did.
    assert summary["inbox_keys_accepted"] == summary["sent"]
    # 75 contacts answer 503 once, 6 always, and 10 of the throttled campaign 429 once. The
    # throttled campaign is never paused and the always-503 ones retry in their last
    # delivery, so those 16 retries always happen; a 503-once contact whose backoff the
    # pause cut short goes out again after resume as a first attempt, not a retry. An
    # always-503 one whose later retry the pause cut short made its first retry before the
    # pause and makes it again after resume: up to 2 each.
    assert 10 + 6 <= summary["retries_by_attempt"]["1"] <= 75 + 10 + 2 * 6
    assert summary["paused_and_resumed"] is True
    assert all(c["pending"] == 0 and c["sending"] == 0 for c in summary["counts"].values())
    assert summary["seconds"] < 60
    # A third campaign on its own inbox; the first two campaigns' figures exclude it.
    assert summary["outage_campaign"] not in summary["counts"]
    assert summary["outage_seconds"] >= 2.5
    assert summary["breaker_opened"] >= 1
    assert summary["breaker_closed"] >= 1
    assert summary["failed_during_outage"] == 0
    assert summary["outage_sent"] == summary["outage_contacts"] == 1200
    # Without the breaker the 300/s inbox would get ~900 POSTs while down (plus retries).
    assert summary["outage_posts"] < 450


def test_demo_for_people_starts_its_summary_on_a_line_of_its_own_and_warns_once() -> None:
    result = run_cli("demo")

    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    # Outside a terminal, rich's live view leaves its last frame without a newline.
    assert any(line.strip() == "demo summary" for line in lines), result.stdout[-3000:]
    assert "breaker opened and closed, 0 contacts failed" in result.stdout, result.stdout[-3000:]
    # Two consumers start; only the one that migrates says whether autovacuum is off.
    assert (result.stdout + result.stderr).count("autovacuum is off") <= 1
