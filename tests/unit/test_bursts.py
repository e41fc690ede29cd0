"""BurstLog: one line per burst, with a count of what it held back."""

from __future__ import annotations

import logging

import pytest

from harness._kit.bursts import BurstLog


def test_a_burst_is_one_line_and_the_next_line_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    log = BurstLog(logging.getLogger("test.bursts"), interval=10.0)
    with caplog.at_level(logging.INFO, logger="test.bursts"):
        logged = [log.log("malformed", 100.0 + i * 0.001, "malformed request from %s", "peer") for i in range(1000)]
        assert log.log("malformed", 111.0, "malformed request from %s", "later")
    assert logged.count(True) == 1
    assert [record.getMessage() for record in caplog.records] == [
        "malformed request from peer",
        "malformed request from later (999 more like it not logged in the last 11 s)",
    ]


def test_kinds_are_limited_apart(caplog: pytest.LogCaptureFixture) -> None:
    log = BurstLog(logging.getLogger("test.bursts"), interval=10.0)
    with caplog.at_level(logging.INFO, logger="test.bursts"):
        assert log.log("refused", 0.0, "refused")
        assert log.log("malformed", 0.5, "malformed")
        assert not log.log("refused", 1.0, "refused")
    assert len(caplog.records) == 2


def test_a_caller_cannot_grow_the_table_without_bound() -> None:
    log = BurstLog(logging.getLogger("test.bursts"))
    for i in range(10_000):
        log.log(f"kind-{i}", 0.0, "x")
    assert len(log._kinds) <= 64


def test_an_allowance_logs_that_many_lines_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    log = BurstLog(logging.getLogger("test.bursts"), interval=10.0, allowance=3)
    with caplog.at_level(logging.INFO, logger="test.bursts"):
        logged = [log.log("refused", 100.0 + i, "refused %d", i) for i in range(8)]
        assert log.log("refused", 110.0, "refused %d", 10)
    assert logged == [True, True, True, False, False, False, False, False]
    assert caplog.records[-1].getMessage() == "refused 10 (5 more like it not logged in the last 10 s)"
