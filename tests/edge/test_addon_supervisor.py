"""The add-on's Supervisor calls, against an HTTP server that answers like the Supervisor does.

The Supervisor itself only runs on Home Assistant OS; this server speaks its documented envelope
(`{"result": "ok", "data": ...}` / `{"result": "error", "message": ...}`) and checks the token.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
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
