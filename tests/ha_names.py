"""Every Home Assistant name the integration imports, and whether the installed Home Assistant has
them.

`imported_names()` reads custom_components/asset_tracker/*.py (no import of the integration): each
`from homeassistant.X import y` as "homeassistant.X:y", and each attribute read on such a name
(`bluetooth.async_register_scanner`, `SourceType.BLUETOOTH_LE`) as "homeassistant.X:y.attr".
tests/ha_names.json records that list with the oldest Home Assistant release it was verified
against (`verified_minimum`, which hacs.json must not undercut).

Run as a script with a Home Assistant environment's Python to check that environment: it prints
the names that do not resolve and exits 1 when there are any (the end-to-end suite's version
matrix runs it with each version's Python). With `--record` it first rewrites the record's names
from the source (then check them with the declared minimum's environment:
`scripts/py314 /opt/venv-ha-2026.10.0/bin/python tests/ha_names.py`).
"""

from __future__ import annotations

import ast
import importlib
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
INTEGRATION = REPO / "custom_components" / "asset_tracker"
RECORD = Path(__file__).with_name("ha_names.json")


def imported_names(folder: Path = INTEGRATION) -> list[str]:
    names: set[str] = set()
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("homeassistant"):
                for alias in node.names:
                    name = f"{node.module}:{alias.name}"
                    names.add(name)
                    aliases[alias.asname or alias.name] = name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("homeassistant"):
                        names.add(f"{alias.name}:")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
            ):
                names.add(f"{aliases[node.value.id]}.{node.attr}")
    return sorted(names)


def why_missing(name: str) -> str | None:
    """None when `module:attr.attr` exists in the installed Home Assistant (an attribute that is a
    submodule is imported, as `from package import module` does), else what is missing."""
    module_name, _, dotted = name.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as err:
        return f"{module_name}: {err}"
    path = module_name
    for part in filter(None, dotted.split(".")):
        path = f"{path}.{part}"
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        try:
            obj = importlib.import_module(path)
        except ImportError as err:
            return f"{path}: {err}"
    return None


def missing(names: list[str]) -> list[str]:
    return [name for name in names if why_missing(name) is not None]


def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORD.read_text())
    return data


def record(names: list[str]) -> None:
    data = recorded()
    data["names"] = names
    RECORD.write_text(json.dumps(data, indent=1) + "\n")


def main() -> int:
    from homeassistant.const import __version__

    names = imported_names()
    if "--record" in sys.argv[1:]:
        record(names)
    absent = missing(names)
    for name in absent:
        print(f"missing in Home Assistant {__version__}: {name} ({why_missing(name)})")
    print(f"Home Assistant {__version__}: {len(names) - len(absent)} of {len(names)} names resolve")
    return 1 if absent else 0


if __name__ == "__main__":
    sys.exit(main())
