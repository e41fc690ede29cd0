"""The grading platforms' files checked against the schemas in tests/schemas, written from their documentation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).resolve().parent / "schemas"


def schema_check(platform: str, document: Any) -> None:
    """Raise jsonschema.ValidationError unless ``document`` is what ``platform`` (gradescope, ...) documents."""
    schema = json.loads((SCHEMAS / f"{platform}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)
