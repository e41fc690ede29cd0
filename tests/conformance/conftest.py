"""One pool of ``conformance run`` processes for the whole tier, and every fixture's run, made once.

Runs mostly wait on deadlines, so a few go at once. A test that checks a fixture's run takes it as
``fixture_runs.get("PROTO/NAME")`` and is parametrised with ``fixture="PROTO/NAME"``: every such run
the selected tests need is started when the first of them asks, the longest first, so that
``pytest -k`` on one test makes one run.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from conformance import registry
from tests.conformance import matrix
from tests.helpers import Run, assert_sane, conformance

# Runs at once: enough to overlap their waits, few enough that a loaded machine keeps the deadlines
# of the cases that pass.
WORKERS = 3


class Runs:
    """``conformance run`` processes on worker threads, by key; ``get`` waits for one."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, workers: int = WORKERS) -> None:
        self._factory = tmp_path_factory
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="conformance-run")
        self._futures: dict[str, Future[Run]] = {}
        self._lock = threading.Lock()

    def start(self, key: str, args: Sequence[str]) -> Future[Run]:
        """Start ``conformance run ARGS`` under ``key``, unless a run has that key already."""
        with self._lock:
            if key not in self._futures:
                # Made here, not in the worker: tmp_path_factory is not thread-safe.
                directory = self._factory.mktemp(key.replace("/", "-"))
                self._futures[key] = self._pool.submit(conformance, directory, "run", *args)
            return self._futures[key]

    def get(self, key: str, args: Sequence[str] | None = None) -> Run:
        """The run under ``key`` (a fixture's, started from its declarations, unless ``args`` are given)."""
        if args is None and key not in self._futures:
            args = matrix.declarations()[key].conformance_args()
        return self.start(key, args or ()).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class ModuleRuns:
    """A test module's own runs (``runs``: key -> the arguments after ``conformance run``) on the tier's
    pool, each under ``PREFIX-KEY``; ``get`` waits for one."""

    def __init__(self, pool: Runs, prefix: str, runs: Mapping[str, Sequence[str]]) -> None:
        self._pool = pool
        self._prefix = prefix
        self._runs = runs

    def start(self, key: str) -> None:
        self._pool.start(f"{self._prefix}-{key}", self._runs[key])

    def get(self, key: str) -> Run:
        return self._pool.get(f"{self._prefix}-{key}", self._runs[key])


def start_module_runs(
    request: pytest.FixtureRequest, pool: Runs, prefix: str, runs: Mapping[str, Sequence[str]]
) -> ModuleRuns:
    """The requesting module's runs, those its selected tests name (parameter ``key``) started in their
    order: `pytest -k` on one test makes one run."""
    started = ModuleRuns(pool, prefix, runs)
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if isinstance(item, pytest.Function) and item.module is request.module and "key" in params:
            started.start(str(params["key"]))
    return started


def serve_command(protocol: str) -> str:
    """``harness serve PROTOCOL`` with a port and a root, as ``--target-cmd`` takes it."""
    return f"{sys.executable} -m harness serve {protocol} --port {{port}} --root {{root}}"


def tcp_and_tls_reference_runs(protocol: str, *command_options: str) -> dict[str, list[str]]:
    """The reference over TCP and TLS, embedded and started as a program (with ``command_options``)."""
    serve = serve_command(protocol)
    return {
        "reference-embedded": ["--target", f"{protocol}=embedded", "--target", f"{protocol}-tls=embedded"],
        "reference-command": [
            "--target-cmd",
            f"{protocol}={serve}",
            "--target-cmd",
            f"{protocol}-tls={serve} --tls-cert {{cert}} --tls-key {{key}}",
            *command_options,
        ],
    }


def assert_reference_passes(run: Run, protocol: str) -> None:
    """Every case of PROTOCOL and PROTOCOL-tls passed, but half-close over TLS (which has none)."""
    assert_sane(run)
    assert run.status == 0, run.stdout
    outcomes = run.outcomes()
    half_close = f"{protocol}.tls.half-close"
    assert {c for c, o in outcomes.items() if o != "passed"} == {half_close}, run.stdout
    assert outcomes[half_close] == "unsupported"
    assert len(outcomes) == 2 * len(registry.protocols()[protocol].cases)


@pytest.fixture(scope="session")
def fixture_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    wanted = set()
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "fixture_runs" in getattr(item, "fixturenames", ()) and "fixture" in params:
            wanted.add(str(params["fixture"]))
    runs = Runs(tmp_path_factory)
    for key in [key for key in matrix.run_declarations() if key in wanted]:
        runs.start(key, matrix.declarations()[key].conformance_args())
    yield runs
    runs.close()
