"""Fault-injection relays: a re-segmenting TCP relay and an impairing UDP relay."""
