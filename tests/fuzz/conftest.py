"""The fuzzing job: many inputs at every sans-IO codec and state machine.

CI runs a short version. The long version is one command (also in the README):

    FUZZ_EXAMPLES=100000 pytest tests/fuzz

The floods at each server, as processes, are in ``tests/integration/test_floods.py``; their long
version is ``FLOOD_SCALE=10 pytest -p no:randomly tests/integration/test_floods.py``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: Inputs per codec or machine; 100000 for the long run.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))

settings.register_profile(
    "fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
