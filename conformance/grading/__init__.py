"""Points and the grading platforms' files.

``rubric`` reads what each case is worth, ``score`` turns outcomes into points (the part a class
gradebook reuses), ``feedback`` writes what a student reads about a case within a size budget, and
``gradescope``, ``classroom`` and ``prairielearn`` shape one run into each platform's file.
"""
