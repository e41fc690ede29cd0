"""Remote command execution (protocol ``command``): a framed command line in, a framed JSON header
with the exit status and output sizes back, then the output bytes.

``wire`` is the sans-IO codec shared by the reference server (``server``), the reference client
(``client``) and the conformance cases; ``builtins`` runs the few commands the reference knows
without a shell; ``cli`` adds ``harness serve command`` and ``harness command``.
"""

# Next to upload's 9904/9905: easy to remember, unprivileged, usually free.
DEFAULT_PORT = 9906
