"""``harness serve upload`` and ``harness upload``: exit codes, output lines, usage errors."""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

import harness
import harness.cli
from harness._kit.tls import server_context_from_files
from harness.upload.client import upload_files
from harness.upload.server import serve_upload
from tests.helpers import first_line, piped_process, read_to_eof, within

REPO_ROOT = Path(harness.__file__).resolve().parent.parent
# Only this package's commands, so that these tests do not depend on the other protocol packages.
UPLOAD_ONLY = ("harness.upload.cli",)


deadline = within(10)


@pytest.fixture(autouse=True)
def upload_commands_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness.cli, "command_modules", lambda: list(UPLOAD_ONLY))


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


async def harness_main(*argv: str) -> int:
    """Run the command in a worker thread: it calls trio.run itself."""
    return await trio.to_thread.run_sync(harness.cli.main, list(argv))


async def start_server(nursery: trio.Nursery, root: Path, **options: Any) -> str:
    port = await nursery.start(functools.partial(serve_upload, root=root, **options))
    return f"127.0.0.1:{port}"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "src"
    folder.mkdir()
    made = {}
    for name, data in {
        "a.txt": b"alpha",
        "b.bin": os.urandom(5000),
        "big.bin": os.urandom(2 * 1024 * 1024),
    }.items():
        (folder / name).write_bytes(data)
        made[name] = folder / name
    return made


# --- harness upload --------------------------------------------------------------------------------


@deadline
async def test_upload_prints_one_line_per_file(
    nursery: trio.Nursery, tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    address = await start_server(nursery, tmp_path / "root")
    assert await harness_main("upload", address, str(files["a.txt"]), str(files["b.bin"])) == 0
    out, err = capsys.readouterr()
    b = files["b.bin"].read_bytes()
    assert out.splitlines() == [f"a.txt: 5 bytes, md5 {md5(b'alpha')}", f"b.bin: 5000 bytes, md5 {md5(b)}"]
    assert err == ""
    assert (tmp_path / "root" / "b.bin").read_bytes() == b


@deadline
async def test_upload_with_name_and_stat(
    nursery: trio.Nursery, tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    address = await start_server(nursery, tmp_path / "root")
    assert await harness_main("upload", address, str(files["a.txt"]), "--name", "docs/名字.txt") == 0
    assert (tmp_path / "root" / "docs" / "名字.txt").read_bytes() == b"alpha"
    capsys.readouterr()
    assert await harness_main("upload", address, "--stat", "docs/名字.txt") == 0
    assert capsys.readouterr().out == f"docs/名字.txt: 5 bytes, md5 {md5(b'alpha')}\n"
    assert await harness_main("upload", address, "--stat", "nope") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("nope: not_found: ")
    assert len(err.splitlines()) == 1


@deadline
async def test_server_errors_are_one_line_per_file_and_exit_1(
    nursery: trio.Nursery, tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    address = await start_server(nursery, tmp_path / "root", max_size=10)
    status = await harness_main("upload", address, str(files["a.txt"]), str(files["b.bin"]), str(files["big.bin"]))
    assert status == 1
    out, err = capsys.readouterr()
    assert out == f"a.txt: 5 bytes, md5 {md5(b'alpha')}\n"
    lines = err.splitlines()
    assert lines[0].startswith("b.bin: too_large: ")
    assert lines[1] == "big.bin: no reply"
    assert lines[2].startswith("harness: ")
    assert "Traceback" not in err


@deadline
async def test_progress_only_when_asked(
    nursery: trio.Nursery, tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    address = await start_server(nursery, tmp_path / "root")
    assert await harness_main("upload", address, str(files["big.bin"]), str(files["a.txt"])) == 0
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    assert await harness_main("upload", address, str(files["big.bin"]), str(files["a.txt"]), "--progress") == 0
    err = capsys.readouterr().err
    assert "big.bin: 100% (2.0 of 2.0 MiB)\n" in err
    assert "a.txt" not in err  # too small to need progress


@deadline
async def test_upload_over_tls(
    nursery: trio.Nursery, tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    cert_pem, key_pem = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(key_pem))
    for blob in cert.cert_chain_pems:
        blob.write_to_path(str(cert_pem), append=True)
    server_ctx = server_context_from_files(cert_pem, key_pem)
    address = await start_server(nursery, tmp_path / "root", ssl_context=server_ctx)
    assert await harness_main("upload", address, str(files["a.txt"]), "--tls-ca", str(ca_pem)) == 0
    assert await harness_main("upload", address, "--stat", "a.txt", "--tls-ca", str(ca_pem)) == 0
    assert capsys.readouterr().out.count(md5(b"alpha")) == 2
    assert await harness_main("upload", address, str(files["a.txt"])) == 1  # plain TCP to a TLS server
    other_ca = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    assert await harness_main("upload", address, str(files["a.txt"]), "--tls-ca", str(other_ca)) == 1
    err = capsys.readouterr().err
    assert "TLS handshake" in err
    assert "Traceback" not in err


@deadline
async def test_connection_refused_is_one_line_exit_1(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))  # bound but not listening: refuses
        port = sock.getsockname()[1]
        assert await harness_main("upload", f"127.0.0.1:{port}", str(files["a.txt"])) == 1
    err = capsys.readouterr().err
    assert err.startswith("harness: cannot connect to ")
    assert len(err.splitlines()) == 1


def usage_cases(tmp_path: Path, files: dict[str, Path]) -> dict[str, list[str]]:
    a, b = str(files["a.txt"]), str(files["b.bin"])
    return {
        "name-with-two-files": ["upload", "127.0.0.1:9", a, b, "--name", "x"],
        "no-files": ["upload", "127.0.0.1:9"],
        "missing-file": ["upload", "127.0.0.1:9", str(tmp_path / "absent")],
        "folder-as-file": ["upload", "127.0.0.1:9", str(tmp_path)],
        "bad-address": ["upload", "localhost", a],
        "bad-port": ["upload", "127.0.0.1:99999", a],
        "files-and-stat": ["upload", "127.0.0.1:9", a, "--stat", "a.txt"],
        "stat-and-name": ["upload", "127.0.0.1:9", "--stat", "a.txt", "--name", "b"],
        "bad-stat-name": ["upload", "127.0.0.1:9", "--stat", "../etc/passwd"],
        "bad-remote-name": ["upload", "127.0.0.1:9", a, "--name", "/abs"],
        "missing-ca": ["upload", "127.0.0.1:9", a, "--tls-ca", str(tmp_path / "absent.pem")],
        "cert-without-key": ["serve", "upload", "--root", str(tmp_path), "--tls-cert", a],
        "unloadable-cert": ["serve", "upload", "--root", str(tmp_path), "--tls-cert", a, "--tls-key", a],
        "root-is-a-file": ["serve", "upload", "--root", a],
        "port-out-of-range": ["serve", "upload", "--root", str(tmp_path), "--port", "70000"],
    }


@pytest.mark.parametrize(
    "case",
    [
        "name-with-two-files",
        "no-files",
        "missing-file",
        "folder-as-file",
        "bad-address",
        "bad-port",
        "files-and-stat",
        "stat-and-name",
        "bad-stat-name",
        "bad-remote-name",
        "missing-ca",
        "cert-without-key",
        "unloadable-cert",
        "root-is-a-file",
        "port-out-of-range",
    ],
)
def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str], case: str
) -> None:
    assert harness.cli.main(usage_cases(tmp_path, files)[case]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("harness: ")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "upload"],
        ["serve", "upload", "--root", ".", "--max-size", "lots"],
        ["serve", "upload", "--root", ".", "--idle-timeout", "0"],
        ["upload", "127.0.0.1:9", "f", "--timeout", "soon"],
    ],
    ids=["no-root", "bad-size", "zero-idle-timeout", "bad-timeout"],
)
def test_argument_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        harness.cli.main(argv)
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_size_suffixes() -> None:
    from harness.upload.cli import parse_size

    assert [parse_size(text) for text in ["0", "1000", "4K", "10M", "2G", "1T", "3MiB", "5kb"]] == [
        0,
        1000,
        4096,
        10 << 20,
        2 << 30,
        1 << 40,
        3 << 20,
        5 << 10,
    ]


# --- harness serve upload --------------------------------------------------------------------------


@deadline
async def test_serve_upload_port_in_use_exits_1(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = await start_server(nursery, tmp_path / "first")
    port = address.rpartition(":")[2]
    assert await harness_main("serve", "upload", "--port", port, "--root", str(tmp_path / "second")) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"cannot serve upload on 127.0.0.1:{port}: ")
    assert "Traceback" not in err


@deadline
async def test_serve_upload_command_serves_until_interrupted(tmp_path: Path, files: dict[str, Path]) -> None:
    code = (
        "import sys, harness.cli as cli; "
        f"cli.command_modules = lambda: list({UPLOAD_ONLY!r}); "
        "sys.exit(cli.main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-c", code, "serve", "upload", "--port", "0", "--root", str(tmp_path / "root")]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    async with piped_process(argv, env=env) as process:
        assert process.stderr is not None
        announcement, _ = await first_line(process.stderr)
        assert announcement.startswith("serving upload on 127.0.0.1:")
        port = int(announcement.split("127.0.0.1:")[1].split()[0])
        replies = await upload_files("127.0.0.1", port, [(files["a.txt"], "a.txt")])
        assert replies[0].ok
        process.send_signal(signal.SIGINT)
        rest = await read_to_eof(process.stderr)
        assert await process.wait() == 0, rest.decode()
    assert b"Traceback" not in rest
    assert (tmp_path / "root" / "a.txt").read_bytes() == b"alpha"
