"""Suite-side TFTP helpers for the ``tftp`` cases: the fixture files and a scriptable client.

:mod:`conformance.tftp.files` names and generates the files a target must serve;
:mod:`conformance.tftp.session` is a client that a case drives packet by packet (withholding or
duplicating ACKs, speaking from a second port, timing retransmissions).
"""
