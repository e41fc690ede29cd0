"""Grading a class at once: ``conformance grade ROSTER --out DIR`` (roster, scheduler, gradebook, matrix)."""
