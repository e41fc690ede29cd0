"""``conformance plan ROSTER``: the job matrix a CI platform fans a roster out over, one shard per job."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from conformance import registry
from conformance.roster.roster import read_roster
from conformance.roster.shards import MATRIX_LIMITS, PLATFORM_NAMES, github_matrix, gitlab_job, plan_shards
from conformance.vocabulary import UsageError

# GitLab job names are free text, but this one is also a hidden job's name and a YAML key.
_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def add_plan_arguments(parser: argparse.ArgumentParser | Any) -> None:
    parser.add_argument("roster", type=Path, metavar="ROSTER", help="the roster CSV file")
    parser.add_argument(
        "--max-jobs",
        type=int,
        metavar="N",
        help=f"at most N jobs (default and most: the platform's limit for one matrix, GitHub "
        f"{MATRIX_LIMITS['github']}, GitLab {MATRIX_LIMITS['gitlab']}); a larger class shares jobs",
    )
    parser.add_argument(
        "--gitlab-job",
        metavar="NAME",
        help="print a GitLab CI job NAME that extends the hidden job .NAME with a parallel:matrix of SHARD and "
        "STUDENTS, for a child pipeline to include (default: a GitHub Actions matrix of shard and students)",
    )


def plan(args: argparse.Namespace) -> int:
    platform = "gitlab" if args.gitlab_job is not None else "github"
    limit = MATRIX_LIMITS[platform]
    max_jobs = limit if args.max_jobs is None else args.max_jobs
    if not 1 <= max_jobs <= limit:
        raise UsageError(f"--max-jobs must be from 1 to {limit}, the most one {PLATFORM_NAMES[platform]} matrix holds")
    if args.gitlab_job is not None and not _JOB_NAME.fullmatch(args.gitlab_job):
        raise UsageError(f"--gitlab-job {args.gitlab_job!r} must be letters, digits, - and _")
    shards = plan_shards(read_roster(args.roster, registry.protocols()), max_jobs)
    document = github_matrix(shards) if args.gitlab_job is None else gitlab_job(shards, args.gitlab_job)
    # One line: GitHub reads it from $GITHUB_OUTPUT as name=value; JSON is also YAML, for GitLab.
    print(json.dumps(document, separators=(",", ":")))
    return 0
