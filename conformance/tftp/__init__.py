"""Suite-side TFTP helpers for the ``tftp`` cases in :mod:`conformance.cases.tftp`.

:mod:`conformance.tftp.files` names and generates the files a target must serve;
:mod:`conformance.tftp.target` starts the embedded reference, fills ``{root}`` and checks a target
before and between cases; :mod:`conformance.tftp.session` is a client that a case drives packet by
packet (withholding or duplicating ACKs, speaking from a stranger port, timing retransmissions).
"""
