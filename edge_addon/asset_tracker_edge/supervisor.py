"""The Home Assistant Supervisor API, as the add-on uses it.

Two calls matter: the MQTT service credentials (``GET /services/mqtt``, what the broker add-on
provides) and discovery (``POST /discovery``), which makes Home Assistant offer the integration's
config flow (``async_step_hassio``) with the node and root topic already known. Both are plain
JSON over HTTP with the add-on's ``SUPERVISOR_TOKEN``; the standard library does it in a worker
thread, so the edge needs no HTTP client dependency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger(__name__)

SUPERVISOR_URL = "http://supervisor"
ADDON_DATA = "/data"
DISCOVERY_SERVICE = "asset_tracker"  # the integration's domain: HA routes discovery by it
_RETRY_FIRST_S = 2.0
_RETRY_MAX_S = 300.0


class SupervisorError(Exception):
    """The Supervisor could not be reached or refused the request."""


@dataclass(frozen=True, slots=True)
class MqttService:
    """Broker credentials the Supervisor hands out to add-ons that use the MQTT service."""

    host: str
    port: int
    username: str | None
    password: str | None
    ssl: bool

    def __repr__(self) -> str:
        # Never let the password reach a log line through a repr.
        return (
            f"MqttService(host={self.host!r}, port={self.port}, "
            f"username={self.username!r}, ssl={self.ssl})"
        )


class SupervisorClient:
    """A small client for the Supervisor's REST API."""

    def __init__(self, token: str, base_url: str = SUPERVISOR_URL, timeout_s: float = 10.0) -> None:
        self._token = token
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self.discovery_uuid: str | None = None
        self.failures = 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SupervisorClient | None:
        """The client when running as an add-on (the Supervisor sets the token), else None."""
        env = os.environ if environ is None else environ
        token = env.get("SUPERVISOR_TOKEN") or env.get("HASSIO_TOKEN")
        if not token:
            return None
        return cls(token, env.get("SUPERVISOR_URL", SUPERVISOR_URL))

    async def mqtt_service(self) -> MqttService:
        """The MQTT broker the Supervisor knows about (the Mosquitto add-on, usually)."""
        data = await self._request("GET", "/services/mqtt")
        try:
            return MqttService(
                host=str(data["host"]),
                port=int(data["port"]),
                username=_optional_str(data.get("username")),
                password=_optional_str(data.get("password")),
                ssl=bool(data.get("ssl", False)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise SupervisorError(f"unexpected MQTT service data: missing or bad {err}") from None

    async def announce(self, root_topic: str, node: str) -> str:
        """Publish the discovery message; returns its uuid."""
        body = {"service": DISCOVERY_SERVICE, "config": {"root_topic": root_topic, "node": node}}
        data = await self._request("POST", "/discovery", body)
        uuid = data.get("uuid")
        if not isinstance(uuid, str):
            raise SupervisorError("discovery answer carries no uuid")
        self.discovery_uuid = uuid
        return uuid

    async def announce_until_done(self, root_topic: str, node: str) -> str:
        """Announce, retrying with backoff while the Supervisor is busy or restarting.

        Runs as a background task beside the node: discovery is a convenience for setting up
        the integration, so its failure never holds up sensing or delivery.
        """
        delay = _RETRY_FIRST_S
        while True:
            try:
                uuid = await self.announce(root_topic, node)
            except SupervisorError as err:
                self.failures += 1
                if self.failures == 1:
                    _LOGGER.warning("Supervisor discovery failed, will retry: %s", err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
            else:
                _LOGGER.info("Announced node %s to Home Assistant (discovery %s)", node, uuid)
                return uuid

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self._request_blocking, method, path, body)

    def _request_blocking(
        self, method: str, path: str, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - the URL is the Supervisor's, http only
            self._base_url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as err:
            raw = err.read()
            raise SupervisorError(f"{method} {path}: HTTP {err.code} {_message(raw)}") from None
        except (urllib.error.URLError, OSError) as err:
            raise SupervisorError(f"{method} {path}: {err}") from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise SupervisorError(f"{method} {path}: answer is not JSON") from None
        if not isinstance(answer, dict) or answer.get("result") != "ok":
            raise SupervisorError(f"{method} {path}: {_message(raw)}")
        data = answer.get("data", {})
        if not isinstance(data, dict):
            raise SupervisorError(f"{method} {path}: answer data is not an object")
        return data


def _optional_str(value: object) -> str | None:
    return None if value in (None, "") else str(value)


def _message(raw: bytes) -> str:
    """The Supervisor's error message, without echoing an arbitrary body into the log."""
    try:
        answer = json.loads(raw)
    except ValueError:
        return "(no JSON message)"
    if isinstance(answer, dict) and isinstance(answer.get("message"), str):
        return str(answer["message"])[:200]
    return "(no message)"


def addon_config(options: Mapping[str, Any], mqtt: MqttService) -> dict[str, Any]:
    """The edge configuration for the add-on: its options plus the Supervisor's broker.

    Option sections carry the configuration's own key names, so they are copied as they are;
    only assets are flattened in the options (the add-on UI allows two levels of nesting) and
    regrouped here. Unset optional options are left out so the configuration default applies.
    """
    config: dict[str, Any] = {}
    for key, value in options.items():
        if key == "assets":
            config["assets"] = [_asset(item) for item in value]
        elif isinstance(value, Mapping):
            config[key] = {k: v for k, v in value.items() if v is not None}
        elif value is not None:
            config[key] = value
    broker: dict[str, Any] = {"host": mqtt.host, "port": mqtt.port}
    if mqtt.username is not None:
        broker["username"] = mqtt.username
    if mqtt.password is not None:
        broker["password"] = mqtt.password
    broker["tls"] = {"enabled": mqtt.ssl}
    config["mqtt"] = {**config.get("mqtt", {}), **broker}
    # The Supervisor keeps /data across restarts and updates and backs it up.
    config["storage"] = {**config.get("storage", {}), "path": ADDON_DATA}
    return config


_ASSET_MATCH_KEYS = ("mac", "ibeacon", "eddystone", "irk")


def _asset(item: Mapping[str, Any]) -> dict[str, Any]:
    """One asset option (flat) as the configuration's asset (``match`` and ``thresholds``)."""
    asset: dict[str, Any] = {}
    match: dict[str, Any] = {}
    thresholds: dict[str, Any] = {}
    for key, value in item.items():
        if value is None:
            continue
        if key == "ibeacon":
            uuid, major, minor = str(value).rsplit(":", 2)
            match["ibeacon"] = {"uuid": uuid, "major": int(major), "minor": int(minor)}
        elif key == "eddystone":
            namespace, instance = str(value).split(":", 1)
            match["eddystone"] = {"namespace": namespace, "instance": instance}
        elif key in _ASSET_MATCH_KEYS:
            match[key] = value
        elif key.endswith(("_min", "_max")):
            thresholds[key] = value
        else:
            asset[key] = value
    asset["match"] = match
    if thresholds:
        asset["thresholds"] = thresholds
    return asset


def _write_private(output: Path, config: dict[str, Any]) -> None:
    """Holds the broker password: owner-only, written whole or not at all."""
    tmp = output.with_name(output.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)
    tmp.replace(output)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m asset_tracker_edge.supervisor``: the add-on's start-up step.

    Writes the edge configuration (JSON, which the YAML loader reads) from the add-on options
    and the MQTT service the Supervisor provides.
    """
    parser = argparse.ArgumentParser(prog="python -m asset_tracker_edge.supervisor")
    parser.add_argument("--options", type=Path, default=Path(ADDON_DATA, "options.json"))
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    client = SupervisorClient.from_environ()
    if client is None:
        _LOGGER.error("SUPERVISOR_TOKEN is not set: this step only runs inside the add-on")
        return 2
    try:
        options = json.loads(args.options.read_text())
        mqtt = asyncio.run(client.mqtt_service())
        _write_private(args.output, addon_config(options, mqtt))
    except (SupervisorError, OSError, ValueError) as err:
        problem = str(err)
    else:
        return 0
    _LOGGER.error("Could not prepare the edge configuration: %s", problem)
    return 1


if __name__ == "__main__":
    sys.exit(main())
