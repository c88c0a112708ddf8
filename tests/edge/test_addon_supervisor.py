"""The add-on's Supervisor calls, against an HTTP server that answers like the Supervisor does.

The Supervisor itself only runs on Home Assistant OS; this server speaks its documented envelope
(`{"result": "ok", "data": ...}` / `{"result": "error", "message": ...}`) and checks the token.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from asset_tracker_edge import supervisor as supervisor_module
from asset_tracker_edge.supervisor import MqttService, SupervisorClient, SupervisorError

TOKEN = "addon-token-123"
MQTT_DATA = {
    "host": "core-mosquitto",
    "port": 1883,
    "ssl": False,
    "protocol": "3.1.1",
    "username": "addons",
    "password": "s3cret-broker-pass",
    "app": "core_mosquitto",
}


@dataclass
class FakeSupervisor:
    url: str
    requests: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    fail_next: int = 0
    mqtt: dict[str, Any] | None = field(default_factory=lambda: dict(MQTT_DATA))
    raw_answer: bytes | None = None


@pytest.fixture
def fake_supervisor() -> Iterator[FakeSupervisor]:
    state = FakeSupervisor(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, code: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode() if state.raw_answer is None else state.raw_answer
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            state.requests.append((method, self.path, body))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._answer(401, {"result": "error", "message": "Invalid token"})
                return
            if state.fail_next > 0:
                state.fail_next -= 1
                self._answer(503, {"result": "error", "message": "Supervisor is starting"})
                return
            if method == "GET" and self.path == "/services/mqtt":
                if state.mqtt is None:
                    self._answer(400, {"result": "error", "message": "Service not enabled"})
                else:
                    self._answer(200, {"result": "ok", "data": state.mqtt})
            elif method == "POST" and self.path == "/discovery":
                if body is None or body.get("service") != "asset_tracker":
                    self._answer(403, {"result": "error", "message": "not listed"})
                else:
                    self._answer(
                        200, {"result": "ok", "data": {"uuid": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"}}
                    )
            else:
                self._answer(404, {"result": "error", "message": "not found"})

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


async def test_mqtt_service_credentials(fake_supervisor):
    client = SupervisorClient(TOKEN, fake_supervisor.url)
    service = await client.mqtt_service()
    assert service == MqttService("core-mosquitto", 1883, "addons", "s3cret-broker-pass", ssl=False)
    assert fake_supervisor.requests == [("GET", "/services/mqtt", None)]


async def test_mqtt_service_repr_hides_the_password(fake_supervisor):
    service = await SupervisorClient(TOKEN, fake_supervisor.url).mqtt_service()
    assert "s3cret" not in repr(service)
    assert "s3cret" not in str(service)


async def test_mqtt_service_without_credentials(fake_supervisor):
    fake_supervisor.mqtt = {
        "host": "broker",
        "port": 8883,
        "ssl": True,
        "username": "",
        "password": None,
    }
    service = await SupervisorClient(TOKEN, fake_supervisor.url).mqtt_service()
    assert service == MqttService("broker", 8883, None, None, ssl=True)


async def test_mqtt_service_missing_is_a_clear_error(fake_supervisor):
    fake_supervisor.mqtt = None
    with pytest.raises(SupervisorError, match="HTTP 400 Service not enabled"):
        await SupervisorClient(TOKEN, fake_supervisor.url).mqtt_service()


async def test_mqtt_service_with_bad_data(fake_supervisor):
    fake_supervisor.mqtt = {"host": "broker", "port": "not-a-port"}
    with pytest.raises(SupervisorError, match="unexpected MQTT service data"):
        await SupervisorClient(TOKEN, fake_supervisor.url).mqtt_service()


async def test_announce_posts_the_discovery_message(fake_supervisor):
    client = SupervisorClient(TOKEN, fake_supervisor.url)
    uuid = await client.announce("asset_tracker", "garage")
    assert uuid == "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    assert client.discovery_uuid == uuid
    assert fake_supervisor.requests == [
        (
            "POST",
            "/discovery",
            {
                "service": "asset_tracker",
                "config": {"root_topic": "asset_tracker", "node": "garage"},
            },
        )
    ]


async def test_wrong_token_is_refused(fake_supervisor):
    with pytest.raises(SupervisorError, match="HTTP 401 Invalid token"):
        await SupervisorClient("wrong", fake_supervisor.url).announce("asset_tracker", "garage")


async def test_non_json_answer_is_a_clear_error(fake_supervisor):
    fake_supervisor.raw_answer = b"<html>proxy error</html>"
    with pytest.raises(SupervisorError, match="not JSON"):
        await SupervisorClient(TOKEN, fake_supervisor.url).announce("asset_tracker", "garage")


async def test_unreachable_supervisor_is_a_clear_error():
    client = SupervisorClient(TOKEN, "http://127.0.0.1:9", timeout_s=2)
    with pytest.raises(SupervisorError, match="POST /discovery"):
        await client.announce("asset_tracker", "garage")


async def test_announce_retries_until_the_supervisor_answers(fake_supervisor, monkeypatch, caplog):
    monkeypatch.setattr(supervisor_module, "_RETRY_FIRST_S", 0.01)
    fake_supervisor.fail_next = 3
    client = SupervisorClient(TOKEN, fake_supervisor.url)
    uuid = await asyncio.wait_for(client.announce_until_done("home/assets", "shed"), timeout=10)
    assert uuid == "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    assert client.failures == 3
    assert len(fake_supervisor.requests) == 4
    assert fake_supervisor.requests[-1][2] == {
        "service": "asset_tracker",
        "config": {"root_topic": "home/assets", "node": "shed"},
    }
    # one warning for the outage, not one per attempt; the token never reaches the log
    assert sum("discovery failed" in r.getMessage() for r in caplog.records) == 1
    assert TOKEN not in caplog.text


def test_from_environ():
    assert SupervisorClient.from_environ({}) is None
    client = SupervisorClient.from_environ({"SUPERVISOR_TOKEN": TOKEN})
    assert client is not None
    assert client._base_url == "http://supervisor"


# --- the add-on's start-up step: options + Supervisor broker -> edge configuration -------------------

ADDON = Path(__file__).resolve().parents[2] / "edge_addon"
ASSETS = [
    {"id": "dog_collar", "name": "Dog collar", "type": "tag", "mac": "aa:bb:cc:dd:ee:ff"},
    {
        "id": "freezer",
        "type": "sensor",
        "mac": "c4:7c:8d:6a:11:22",
        "temperature_max": -12.0,
    },
    {"id": "keys", "type": "tag", "ibeacon": "fda50693-a4e2-4fb1-afcf-c6eb07647825:1:42"},
    {"id": "beacon", "type": "tag", "eddystone": "00112233445566778899:aabbccddeeff"},
    {"id": "phone", "type": "tag", "irk": "0123456789abcdef0123456789abcdef"},
]


def addon_options() -> dict[str, Any]:
    """What the Supervisor writes to /data/options.json: the defaults plus the user's assets."""
    with (ADDON / "config.yaml").open() as f:
        options = yaml.safe_load(f)["options"]
    return {**options, "node": {**options["node"], "area": "garage"}, "assets": ASSETS}


def render(
    fake: FakeSupervisor, tmp_path: Path, token: str = TOKEN
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "options.json").write_text(json.dumps(addon_options()))
    env = {k: v for k, v in os.environ.items() if k not in {"SUPERVISOR_TOKEN", "HASSIO_TOKEN"}}
    if token:
        env["SUPERVISOR_TOKEN"] = token
    env["SUPERVISOR_URL"] = fake.url
    return subprocess.run(
        [
            sys.executable, "-m", "asset_tracker_edge.supervisor",
            "--options", str(tmp_path / "options.json"),
            "--output", str(tmp_path / "edge-config.json"),
        ],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_startup_step_writes_the_edge_configuration(fake_supervisor, tmp_path):
    result = render(fake_supervisor, tmp_path)
    assert result.returncode == 0, result.stderr
    output = tmp_path / "edge-config.json"
    # it holds the broker password: owner-only
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("*.tmp"))
    config = json.loads(output.read_text())
    options = addon_options()

    assert config["mqtt"] == {
        **options["mqtt"],
        "host": "core-mosquitto",
        "port": 1883,
        "username": "addons",
        "password": "s3cret-broker-pass",
        "tls": {"enabled": False},
    }
    assert config["storage"] == {**options["storage"], "path": "/data"}
    assert config["node"] == {"id": "homeassistant", "name": "Home Assistant", "area": "garage"}
    # every other option section is the configuration section of the same name, unchanged
    for section in set(options) - {"mqtt", "storage", "node", "assets"}:
        assert config[section] == options[section], section
    assert config["assets"] == [
        {
            "id": "dog_collar",
            "name": "Dog collar",
            "type": "tag",
            "match": {"mac": "aa:bb:cc:dd:ee:ff"},
        },
        {
            "id": "freezer",
            "type": "sensor",
            "match": {"mac": "c4:7c:8d:6a:11:22"},
            "thresholds": {"temperature_max": -12.0},
        },
        {
            "id": "keys",
            "type": "tag",
            "match": {
                "ibeacon": {"uuid": "fda50693-a4e2-4fb1-afcf-c6eb07647825", "major": 1, "minor": 42}
            },
        },
        {
            "id": "beacon",
            "type": "tag",
            "match": {
                "eddystone": {"namespace": "00112233445566778899", "instance": "aabbccddeeff"}
            },
        },
        {"id": "phone", "type": "tag", "match": {"irk": "0123456789abcdef0123456789abcdef"}},
    ]
    assert "s3cret" not in result.stderr + result.stdout


def test_startup_step_fails_clearly_without_a_broker(fake_supervisor, tmp_path):
    fake_supervisor.mqtt = None
    result = render(fake_supervisor, tmp_path)
    assert result.returncode == 1
    assert "Could not prepare the edge configuration" in result.stderr
    assert "Service not enabled" in result.stderr
    assert not (tmp_path / "edge-config.json").exists()


def test_startup_step_outside_the_addon(fake_supervisor, tmp_path):
    result = render(fake_supervisor, tmp_path, token="")
    assert result.returncode == 2
    assert "SUPERVISOR_TOKEN is not set" in result.stderr
    assert fake_supervisor.requests == []


def test_startup_step_rejects_unreadable_options(fake_supervisor, tmp_path):
    (tmp_path / "options.json").write_text("{not json")
    env = {**os.environ, "SUPERVISOR_TOKEN": TOKEN, "SUPERVISOR_URL": fake_supervisor.url}
    result = subprocess.run(
        [
            sys.executable, "-m", "asset_tracker_edge.supervisor",
            "--options", str(tmp_path / "options.json"),
            "--output", str(tmp_path / "edge-config.json"),
        ],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Could not prepare the edge configuration" in result.stderr
    assert not (tmp_path / "edge-config.json").exists()


# --- the whole add-on start: start-up step, then the edge, against a real broker --------------------


async def _retained(host: str, port: int, topic: str, timeout: float) -> dict[str, Any] | None:
    import aiomqtt

    async with aiomqtt.Client(host, port, identifier=f"probe-{os.getpid()}") as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(timeout):
                async for message in client.messages:
                    payload = json.loads(bytes(message.payload))
                    if payload.get("state") == "online":
                        return dict(payload)
        except TimeoutError:
            return None
    return None


async def test_addon_start_announces_the_node_and_connects_to_the_supervisors_broker(
    fake_supervisor, mosquitto, tmp_path
):
    # the Supervisor hands out the real broker, as it would the Mosquitto add-on
    fake_supervisor.mqtt = {"host": mosquitto.host, "port": mosquitto.port, "ssl": False}
    assert render(fake_supervisor, tmp_path).returncode == 0
    config = json.loads((tmp_path / "edge-config.json").read_text())
    env = {**os.environ, "SUPERVISOR_TOKEN": TOKEN, "SUPERVISOR_URL": fake_supervisor.url}
    log_path = tmp_path / "edge.log"
    # what run.sh execs, on simulated tags (no radio here) and with the state in tmp_path
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "asset_tracker_edge", "simulate",
            "--config", str(tmp_path / "edge-config.json"), "--data", str(tmp_path / "data"),
            "--rate", "5", "--seed", "7",
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
    try:
        birth = await _retained(
            mosquitto.host, mosquitto.port, f"asset_tracker/{config['node']['id']}/status", 30
        )
        assert birth is not None, log_path.read_text()[-2000:]
        assert birth["node"] == "homeassistant"
        for _ in range(300):
            if any(r[1] == "/discovery" for r in fake_supervisor.requests):
                break
            await asyncio.sleep(0.1)
        discovery = [r for r in fake_supervisor.requests if r[1] == "/discovery"]
        assert discovery == [
            (
                "POST",
                "/discovery",
                {
                    "service": "asset_tracker",
                    "config": {"root_topic": "asset_tracker", "node": "homeassistant"},
                },
            )
        ]
    finally:
        if process.returncode is None:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=30)
        except TimeoutError:
            process.kill()  # never leave a node behind; the assertion below reports it
            await process.wait()
    # a clean stop on SIGTERM, and the broker password never reached the log
    log_text = log_path.read_text()
    assert process.returncode == 0, f"no clean stop on SIGTERM: {log_text[-2000:]}"
    assert "s3cret" not in log_text
