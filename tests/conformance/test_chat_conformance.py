"""The chat cases: the reference passes them all, and each broken server in fixtures/chat is caught
by the case about its flaw (and, among the cases run against it, only by those).

The fixtures are also checked as programs: they say where they listen and stop cleanly on SIGTERM.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from conformance import registry
from conformance.launch import free_port
from tests.helpers import FIXTURES, REPO, Run, conformance, fixture_command

CHAT_CASES = {case.id for case in registry.protocols()["chat"].cases}
DEADLINE = 5.0
REFERENCE = "reference"
# Runs at once; they mostly wait on deadlines, so more than the CPUs, but not so many that a
# loaded machine makes a passing case miss its deadline.
PARALLEL_RUNS = 4

# fixture -> (cases run against it, the ones that must fail, a fragment of the intended failure's message)
# Each selection adds a case the fixture passes, to show it is otherwise a working server.
CAUGHT: dict[str, tuple[list[str], set[str], str]] = {
    "ansentry_without_name": (
        ["chat.join", "chat.rejoin", "chat.relay"],
        {"chat.join", "chat.rejoin"},
        "does not carry the nickname",
    ),
    "rejoin_ignored": (["chat.join", "chat.rejoin"], {"chat.rejoin"}, "waiting for ANSENTRY"),
    "relays_to_first_only": (["chat.ack", "chat.relay"], {"chat.relay"}, "carol"),
    "no_ack": (["chat.relay", "chat.ack"], {"chat.ack"}, "RECVMSG"),
    "echoes_sender": (["chat.relay", "chat.no-echo"], {"chat.no-echo"}, "back to alice"),
    "splits_on_colon": (["chat.relay", "chat.text"], {"chat.text"}, "differs"),
    "recvfrom_1024": (["chat.relay", "chat.text"], {"chat.text"}, "8000"),
    "crashes_on_gb2312": (["chat.relay", "chat.gb2312"], {"chat.gb2312"}, "GB2312"),
    "relays_duplicates": (
        ["chat.relay", "chat.lost-ack", "chat.impairment"],
        {"chat.lost-ack", "chat.impairment"},
        "2 times",
    ),
    "time_numbered": (
        ["chat.relay", "chat.lost-ack", "chat.order"],
        {"chat.lost-ack", "chat.order"},
        "packet_no",
    ),
    "never_retransmits": (["chat.relay", "chat.retransmit"], {"chat.retransmit"}, "to be retransmitted"),
    "ignores_relay_acks": (["chat.relay", "chat.retransmit"], {"chat.retransmit"}, "after bob acknowledged"),
    "reverses_bursts": (["chat.relay", "chat.order"], {"chat.order"}, "out of order"),
    "ignores_exit": (["chat.relay", "chat.exit"], {"chat.exit"}, "BR_EXIT"),
    "relays_non_members": (["chat.relay", "chat.non-member"], {"chat.non-member"}, "non-member"),
    "crashes_on_malformed": (["chat.relay", "chat.malformed"], {"chat.malformed"}, "shrunk input"),
    "room_of_32": (["chat.relay", "chat.many-members"], {"chat.many-members"}, "18 of 49 members"),
}
ALL_FIXTURES = sorted(p.stem for p in (FIXTURES / "chat").glob("*.py") if not p.stem.startswith("_"))


def documented_fixtures(page: str, prefix: str) -> dict[str, tuple[list[str], set[str]]]:
    """From the page's fixture table: fixture -> (cases run, cases that fail, outside parentheses)."""
    rows = {}
    for line in (REPO / "docs" / page).read_text().splitlines():
        match = re.match(r"\| `(\w+)\.py` \|[^|]*\|([^|]*)\|([^|]*)\|$", line)
        if match:
            name, run, fail = match.groups()
            selected = [f"{prefix}.{slug}" for slug in re.findall(r"`([\w-]+)`", run)]
            failing = set(re.findall(r"`(" + re.escape(prefix) + r"\.[\w-]+)`", re.sub(r"\(.*?\)", "", fail)))
            rows[name] = (selected, failing)
    return rows


def test_every_fixture_has_an_intended_case() -> None:
    assert sorted(CAUGHT) == ALL_FIXTURES


def test_the_fixture_table_in_the_docs_says_what_is_asserted() -> None:
    documented = documented_fixtures("chat.md", "chat")
    assert documented == {name: (selected, failing) for name, (selected, failing, _) in CAUGHT.items()}


def test_every_case_is_caught_by_some_fixture() -> None:
    caught = set().union(*(failing for _, failing, _ in CAUGHT.values()))
    assert caught == CHAT_CASES


def exactly(case_id: str) -> list[str]:
    """``-k`` words selecting this case alone (a pattern without wildcards matches as a substring)."""
    return ["-k", f"[{case_id[0]}]{case_id[1:]}"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """The reference and every fixture, run at once: most of their time is spent in deadlines."""
    names = [REFERENCE, *CAUGHT]
    # Made here, not in the threads: tmp_path_factory is not thread-safe.
    directories = {name: tmp_path_factory.mktemp(name) for name in names}

    def run(name: str) -> Run:
        directory = directories[name]
        if name == REFERENCE:
            return conformance(directory, "run", "--target", "chat=embedded")
        selected = [word for case_id in CAUGHT[name][0] for word in exactly(case_id)]
        return conformance(directory, "run", "--target-cmd", fixture_command("chat", f"chat/{name}.py"), *selected)

    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        return dict(zip(names, pool.map(run, names), strict=True))


# The first test to use `runs` waits for all of them (about 15 s).
@pytest.mark.slow
def test_reference_passes_every_chat_case(runs: dict[str, Run]) -> None:
    run = runs[REFERENCE]
    assert run.status == 0, run.stdout + run.stderr
    assert run.outcomes() == {case_id: "passed" for case_id in CHAT_CASES}
    impairment = run.case("chat.impairment")
    assert any("drop" in note and "duplicate" in note for note in impairment["notes"]), impairment["notes"]


@pytest.mark.slow
@pytest.mark.parametrize("fixture", sorted(CAUGHT))
def test_fixture_is_caught_by_its_case(runs: dict[str, Run], fixture: str) -> None:
    selected, failing, fragment = CAUGHT[fixture]
    run = runs[fixture]
    assert run.status == 1, run.stdout + run.stderr
    assert run.outcomes() == {case_id: "failed" if case_id in failing else "passed" for case_id in selected}, run.stdout
    messages = " ".join(run.case(case_id)["message"] for case_id in failing)
    assert fragment in messages, messages


@pytest.mark.parametrize("fixture", ALL_FIXTURES)
def test_fixture_announces_its_port_answers_a_join_and_stops_on_sigterm(fixture: str) -> None:
    port = free_port("udp")
    command = [sys.executable, str(FIXTURES / "chat" / f"{fixture}.py"), str(port)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == f"listening on 127.0.0.1:{port}\n".encode()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as member:
                member.settimeout(DEADLINE)
                member.sendto(b"1:7:smoke:test:1:", ("127.0.0.1", port))
                answer, _ = member.recvfrom(65536)
            assert answer.split(b":")[4] == b"3"
            proc.terminate()
            _, stderr = proc.communicate(timeout=DEADLINE)
            assert proc.returncode == 0, stderr
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=DEADLINE)
