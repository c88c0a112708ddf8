"""The asset list Home Assistant sends (PROTOCOL.md "assets"), merged with the YAML assets.

A list is versioned and all or nothing: its parts are collected, the whole is checked, and only a
list without a single problem replaces the previous one. It is persisted (atomically, readable by
the node's user only: it may hold IRKs) before anything uses it, so a restart applies it at once,
before Home Assistant is reachable.

What wins when both name an asset: Home Assistant's entry. A YAML asset with the same id, or with
a match Home Assistant's list also uses (an advert can name one asset only), is left out while
Home Assistant's list holds that asset, and reported as shadowed; the other YAML assets still work.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import voluptuous as vol

from . import config as edge_config
from .durable_file import write_json_atomic
from .protocol import MAX_ASSETS, MAX_ERRORS

_LOGGER = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    """What the node answers in `assets/result`."""

    ok: bool
    errors: list[str] = field(default_factory=list)


def match_keys(match: dict[str, Any]) -> set[tuple[Any, ...]]:
    """The identities an advert can be matched by, comparable across assets."""
    keys: set[tuple[Any, ...]] = set()
    if match.get("mac"):
        keys.add(("mac", match["mac"].lower()))
    if match.get("ibeacon"):
        b = match["ibeacon"]
        keys.add(("ibeacon", b["uuid"].lower(), b["major"], b["minor"]))
    if match.get("eddystone"):
        e = match["eddystone"]
        keys.add(("eddystone", e["namespace"].lower(), e["instance"].lower()))
    if match.get("irk"):
        keys.add(("irk", match["irk"].lower()))
    return keys


def _as_config(item: dict[str, Any]) -> dict[str, Any]:
    """A wire asset (null fields filled in by the codec) in the YAML configuration's shape."""
    asset = {k: v for k, v in item.items() if v is not None and k != "match"}
    asset["match"] = {k: v for k, v in item["match"].items() if v is not None}
    result: dict[str, Any] = edge_config.ASSET(asset)
    return result


def check(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The list in configuration shape, and every problem with it (empty: usable)."""
    problems: list[str] = []
    if len(items) > MAX_ASSETS:
        problems.append(f"assets: {len(items)} assets, at most {MAX_ASSETS}")
    assets: list[dict[str, Any]] = []
    ids: dict[str, int] = {}
    owners: dict[tuple[Any, ...], int] = {}
    for index, item in enumerate(items):
        try:
            asset = _as_config(item)
        except vol.Invalid as err:
            problems.append(f"assets[{index}]: {err}")
            continue
        if asset["id"] in ids:
            problems.append(f"assets[{index}]: the same id as assets[{ids[asset['id']]}]")
        ids.setdefault(asset["id"], index)
        for key in match_keys(asset["match"]):
            if key in owners:
                problems.append(f"assets[{index}].match: the same match as assets[{owners[key]}]")
            owners.setdefault(key, index)
        assets.append(asset)
    return assets, problems[:MAX_ERRORS]


class AssetList:
    """The node's assets: its YAML ones and the version of Home Assistant's list it applies."""

    def __init__(self, yaml_assets: list[dict[str, Any]], path: Path | None = None) -> None:
        self._yaml = list(yaml_assets)
        self._path = path
        self.version = 0  # 0: no list from Home Assistant, the YAML assets alone
        self.remote: list[dict[str, Any]] = []
        self.rejected = 0
        self._parts: dict[int, list[dict[str, Any]]] = {}
        self._parts_of: tuple[int, int] = (0, 0)  # (version, parts) being collected
        self._listeners: list[Callable[[list[dict[str, Any]]], None]] = []
        self._merged_for: list[dict[str, Any]] | None = None
        self._merged_cache: tuple[list[str], list[dict[str, Any]]] = ([], [])
        self._load()

    def _load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        try:
            saved = json.loads(self._path.read_text(encoding="utf-8"))
            version, items = int(saved["version"]), list(saved["assets"])
            assets, problems = check(items)
        except (OSError, ValueError, KeyError, TypeError) as err:
            _LOGGER.warning("Ignoring unreadable asset list %s: %s", self._path, err)
            return
        if problems:
            _LOGGER.warning("Ignoring asset list %s: %s", self._path, "; ".join(problems))
            return
        self.version, self.remote = version, assets

    # the list in effect

    def effective(self) -> list[dict[str, Any]]:
        """Home Assistant's assets, then every YAML asset none of them shadows."""
        return list(self._merged()[1])

    def shadowed(self) -> list[str]:
        """The YAML assets Home Assistant's list replaces (same id, or a match it uses)."""
        return list(self._merged()[0])

    def _merged(self) -> tuple[list[str], list[dict[str, Any]]]:
        """(shadowed, effective), worked out once per list: a list of 1,000 assets is asked for
        them several times while it is applied and confirmed."""
        if self._merged_for is not self.remote:
            shadowed: list[str] = []
            if self._yaml:
                ids = {a["id"] for a in self.remote}
                keys = set().union(*(match_keys(a["match"]) for a in self.remote))
                shadowed = [
                    a["id"]
                    for a in self._yaml
                    if a["id"] in ids or match_keys(a.get("match") or {}) & keys
                ]
            hidden = set(shadowed)
            effective = [*self.remote, *(a for a in self._yaml if a["id"] not in hidden)]
            self._merged_for, self._merged_cache = self.remote, (shadowed, effective)
        return self._merged_cache

    def subscribe(self, callback: Callable[[list[dict[str, Any]]], None]) -> None:
        self._listeners.append(callback)

    # a list from Home Assistant

    def receive(self, message: dict[str, Any]) -> Outcome | None:
        """Takes one part of a list; the outcome once the list is whole (None: parts missing)."""
        version, part, parts = message["version"], message["part"], message["parts"]
        if version <= self.version:
            _LOGGER.info(
                "asset list version %d is not newer than %d; unchanged", version, self.version
            )
            return Outcome(ok=True)
        if self._parts_of != (version, parts):
            # a newer list (or the same one cut differently) replaces what was being collected
            self._parts_of, self._parts = (version, parts), {}
        self._parts[part] = message["assets"]
        if len(self._parts) < parts:
            return None
        items = [item for index in range(parts) for item in self._parts[index]]
        self._parts_of, self._parts = (0, 0), {}
        return self._replace(version, items)

    def reject(self, version: int | None, problems: list[str]) -> Outcome:
        """A list that failed before it could be read whole (the codec refused a part)."""
        self.rejected += 1
        _LOGGER.warning(
            "rejected asset list version %s; keeping version %d: %s",
            version,
            self.version,
            "; ".join(problems),
        )
        return Outcome(ok=False, errors=problems[:MAX_ERRORS])

    def _replace(self, version: int, items: list[dict[str, Any]]) -> Outcome:
        assets, problems = check(items)
        if problems:
            return self.reject(version, problems)
        if self._path is not None:
            # durable before it is used or confirmed; 0600, like every state file of the node
            write_json_atomic(self._path, {"version": version, "assets": assets})
        self.version, self.remote = version, assets
        _LOGGER.info(
            "applied asset list version %d: %d from Home Assistant, %d in effect",
            version,
            len(assets),
            len(self.effective()),
        )
        if shadowed := self.shadowed():
            _LOGGER.info(
                "Home Assistant's list replaces these YAML assets: %s", ", ".join(shadowed)
            )
        effective = self.effective()
        for listener in list(self._listeners):
            listener(effective)
        return Outcome(ok=True)
