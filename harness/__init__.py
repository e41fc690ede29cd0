"""Reference servers, clients and fault tools for the course protocols.

Protocol cores (``harness.<proto>.core`` / ``codec``) are sans-IO: they never import trio.
"""
