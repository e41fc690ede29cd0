"""TLS material: a throwaway trustme CA for embedded and started targets, or the user's CA file."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

# Names the embedded certificate is valid for, so clients may use any loopback spelling.
SERVER_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_tls_files(directory: Path) -> TlsFiles:
    """Write a fresh CA and a server certificate for the loopback names into ``directory``."""
    ca = trustme.CA()
    server = ca.issue_cert(*SERVER_NAMES)
    files = TlsFiles(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")
    ca.cert_pem.write_to_path(str(files.ca))
    # The chain file holds the leaf followed by its issuers, as servers expect.
    with open(files.cert, "wb") as out:
        out.writelines(blob.bytes() for blob in server.cert_chain_pems)
    server.private_key_pem.write_to_path(str(files.key))
    return files


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
