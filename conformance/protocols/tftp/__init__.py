"""TFTP servers: RFC 1350 with RFC 1123 §4.2, and the options of RFC 2347, 2348, 2349 and 7440.

The suite is the client. It reads the fixture files (:mod:`conformance.protocols.tftp.files`) that the target
must serve, and writes files of its own where the target accepts uploads. Cases that need a
feature the target does not offer (options, uploads) are ``unsupported``, not failed.

RFC 1350 predates RFC 2119 and writes its requirements in lower case; its "should" for the
transfer-ID check is taken as a MUST for the check itself (without it a stranger can drive any
transfer) and as a SHOULD for the ERROR 5 sent back to the stranger. Nor does it say in so many
words that the receiver of an ERROR must stop: it says that an ERROR is "not acknowledged, and not
retransmitted" and that most errors "cause termination of the connection" (§2), so a server that
goes on after the client's ERROR fails ``tftp.error.client-abort`` as a SHOULD; the transfers the
suite ends elsewhere only get a note pointing to it.

The suite ends what it starts: a case's transfers left open are ended with ERROR and drained when
the case ends (:meth:`Client.aclose <conformance.protocols.tftp.session.Client.aclose>`), and the liveness
check after each case reads its file to the end, waiting out a server still busy with an earlier
transfer. Only ``tftp.concurrency`` judges a server that serves one transfer at a time.

The cases live one module per section of the spec, in :data:`SECTIONS`; :mod:`.protocol` holds the
record they register on and :mod:`.support` the helpers they share.
"""

import importlib

from conformance.protocols.tftp.protocol import PROTOCOLS

__all__ = ["PROTOCOLS", "SECTIONS"]

# The modules of cases, in the order the cases run and are listed (each registers as it is imported).
SECTIONS = ("rrq", "wrap", "wrq", "tid", "errors", "modes", "netascii", "options", "concurrency")
for _section in SECTIONS:
    importlib.import_module(f"{__name__}.{_section}")
