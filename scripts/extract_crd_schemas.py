"""Extract the OpenAPI v3 schema of each served version from CustomResourceDefinition files.

Usage: python scripts/extract_crd_schemas.py OUT_DIR CRD.yaml...  writes OUT_DIR/<group>_<kind>_<version>.json

Descriptions are dropped (they are prose, not constraints), so what tests keep is only the
structural schema the API server would enforce. tests/data/crd_schemas/SOURCES.md names where
each file came from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def main(out: Path, files: list[Path]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for file in files:
        for doc in yaml.safe_load_all(file.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                if not version.get("served"):
                    continue
                schema = _strip(version["schema"]["openAPIV3Schema"])
                name = f"{spec['group']}_{spec['names']['kind']}_{version['name']}.json".lower()
                (out / name).write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")
                print(out / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(a) for a in sys.argv[2:]])
