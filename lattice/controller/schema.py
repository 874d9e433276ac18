"""The manifest JSON schema, generated from the pydantic models.

    python -m lattice.controller.schema            # writes manifests/schema.json
    python -m lattice.controller.schema --check    # exits 1 when the file is stale

Editors use the schema for completion and checking (`# yaml-language-server:
$schema=…`). It describes the shape only; `validate()` also checks what the shape
cannot say (duplicate names, one scaler per component, weights, link targets). A test
compares the committed file with a fresh rendering, so a model change without
regenerating fails the build.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lattice.controller.manifest import Manifest

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "manifests" / "schema.json"
SCHEMA_ID = "https://lattice.dev/schemas/application-manifest.json"


def schema() -> dict[str, Any]:
    body = Manifest.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **body}


def render() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    parser.add_argument("--output", type=Path, default=SCHEMA_PATH)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(
                f"{args.output} is stale: run python -m lattice.controller.schema", file=sys.stderr
            )
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
