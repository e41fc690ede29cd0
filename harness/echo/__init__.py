"""Echo (RFC 862) over TCP, UDP and TLS: reference server, client and ``harness`` commands.

``transform`` is the sans-IO part (what the server sends back for a chunk); ``server`` and
``client`` wrap it with Trio.
"""
