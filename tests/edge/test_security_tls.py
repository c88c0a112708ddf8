"""The edge node over TLS and mutual TLS to a real mosquitto, with certificates made by the test;
a wrong CA, a missing client certificate and a wrong password fail clearly, and no credential ever
reaches a log line, the health message or a repr."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from asset_tracker_edge.events import EdgeEvent, Priority
from asset_tracker_edge.node import EdgeNode
from certificates import Authority, Issued, tls_listener_conf
from mosquitto_broker import Mosquitto
from procs.static_settings import StaticSettings

ROOT = "asset_tracker"
PASSWORD = "s3cret-Pa55word-never-logged"


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[dict[str, Any]]:
    ca = Authority(tmp_path / "pki")
    other = Authority(tmp_path / "pki", name="Some Other CA")
    return {
        "ca": ca,
        "other": other,
        "server": ca.issue("broker", server=True),
        "garage": ca.issue("garage", server=False),
        "observer": ca.issue("observer", server=False),
        "rogue": other.issue("garage", server=False),
    }


@contextlib.contextmanager
def tls_broker(
    tmp_path: Path, pki: dict[str, Any], *, mutual: bool, extra: str = ""
) -> Iterator[Mosquitto]:
    conf = tls_listener_conf(pki["ca"].cert, pki["server"], require_client_cert=mutual) + extra
    broker = Mosquitto(tmp_path / "tls-broker", extra_conf=conf)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def edge_config(
    tmp_path: Path, broker: Mosquitto, tls: dict[str, Any], node: str = "garage", /, **mqtt: Any
) -> dict[str, Any]:
    return {
        "node": {"id": node, "name": node.title()},
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "root_topic": ROOT,
            "keepalive_s": 5,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.3,
            "tls": tls,
            **mqtt,
        },
        "storage": {"path": str(tmp_path / "edge"), "commit_window_ms": 10},
        "batching": {"window_ms": 50, "max_events": 200, "max_inflight": 20},
    }


def client_context(ca: Path, client: Issued | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


@contextlib.asynccontextmanager
async def running(node: EdgeNode) -> AsyncIterator[EdgeNode]:
    task = asyncio.create_task(node.run())
    try:
        yield node
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def first_message(
    client: aiomqtt.Client, topic: str, timeout: float = 10.0
) -> dict[str, Any]:
    """The next message on `topic` (the client has subscribed to it beforehand)."""
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            if str(message.topic) == topic:
                return json.loads(bytes(message.payload))  # type: ignore[arg-type]
    raise AssertionError("no message")


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_edge_publishes_over_tls_verifying_the_broker(
    tmp_path: Path, pki: dict[str, Any]
) -> None:
    with tls_broker(tmp_path, pki, mutual=False) as broker:
        tls = {"enabled": True, "ca_file": str(pki["ca"].cert)}
        node = EdgeNode(edge_config(tmp_path, broker, tls), StaticSettings())
        async with aiomqtt.Client(
            broker.host, broker.port, tls_context=client_context(pki["ca"].cert, None)
        ) as observer:
            await observer.subscribe(f"{ROOT}/garage/#", qos=1)
            async with running(node):
                status = await first_message(observer, f"{ROOT}/garage/status")
                assert status["state"] == "online"
                await node.emit(
                    EdgeEvent("presence", Priority.CRITICAL, "dog", {"state": "present"})
                )
                batch = await first_message(observer, f"{ROOT}/garage/events")
                assert batch["events"][0]["data"]["state"] == "present"
        assert node.link.connects >= 1


async def test_plain_mqtt_to_a_tls_listener_does_not_connect(
    tmp_path: Path, pki: dict[str, Any]
) -> None:
    with tls_broker(tmp_path, pki, mutual=False) as broker:
        node = EdgeNode(edge_config(tmp_path, broker, {"enabled": False}), StaticSettings())
        async with running(node):
            await asyncio.sleep(2.0)
        assert node.link.connects == 0


async def test_wrong_ca_fails_clearly_and_never_connects(
    tmp_path: Path, pki: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with tls_broker(tmp_path, pki, mutual=False) as broker:
        tls = {"enabled": True, "ca_file": str(pki["other"].cert)}
        node = EdgeNode(
            edge_config(tmp_path, broker, tls, username="garage", password=PASSWORD),
            StaticSettings(),
        )
        async with running(node):
            await wait_until(lambda: node.link.last_error is not None)
            await asyncio.sleep(1.0)  # several reconnect attempts
        assert node.link.connects == 0
        assert "CERTIFICATE_VERIFY_FAILED" in (node.link.last_error or "")
        warnings = [r for r in caplog.records if "CERTIFICATE_VERIFY_FAILED" in r.getMessage()]
        # said once, clearly, not once per reconnect attempt
        assert len(warnings) == 1
        assert warnings[0].levelno == logging.WARNING
    assert PASSWORD not in caplog.text


async def test_mutual_tls_needs_a_client_certificate_from_the_right_ca(
    tmp_path: Path, pki: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with tls_broker(tmp_path, pki, mutual=True) as broker:
        base = {"enabled": True, "ca_file": str(pki["ca"].cert)}
        # without a client certificate, or with one from another CA (even under the right name),
        # the broker refuses the session; with TLS 1.3 that comes after the handshake, so the
        # client learns it from the alert in its read (logged by paho) and a connect timeout.
        # The broker closes right after its alert: a read can see the reset before the alert, so
        # each alert is awaited over the reconnect attempts rather than expected on the first one.
        rogue = {**base, "cert_file": str(pki["rogue"].cert), "key_file": str(pki["rogue"].key)}
        anonymous = EdgeNode(
            edge_config(tmp_path / "a", broker, base, "anonymous"), StaticSettings()
        )
        impostor = EdgeNode(
            edge_config(tmp_path / "b", broker, rogue, "impostor"), StaticSettings()
        )
        caplog.set_level(logging.DEBUG)
        async with running(anonymous), running(impostor):
            await wait_until(lambda: anonymous.link.last_error and impostor.link.last_error, 30)
            await wait_until(
                lambda: (
                    "CERTIFICATE_REQUIRED" in caplog.text and "UNKNOWN_CA" in caplog.text.upper()
                ),
                60,
            )
        assert anonymous.link.connects == 0
        assert impostor.link.connects == 0


async def test_mutual_tls_with_the_node_certificate(tmp_path: Path, pki: dict[str, Any]) -> None:
    with tls_broker(tmp_path, pki, mutual=True) as broker:
        base = {"enabled": True, "ca_file": str(pki["ca"].cert)}
        # the node's own certificate works, and the broker knows it by its certificate name
        mine = {**base, "cert_file": str(pki["garage"].cert), "key_file": str(pki["garage"].key)}
        node = EdgeNode(edge_config(tmp_path / "c", broker, mine), StaticSettings())
        observer = pki["observer"]
        # the observer is mosquitto's own client, a second, independent TLS implementation user
        sub = await asyncio.create_subprocess_exec(
            "mosquitto_sub",
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "--cafile",
            str(pki["ca"].cert),
            "--cert",
            str(observer.cert),
            "--key",
            str(observer.key),
            "-t",
            f"{ROOT}/garage/status",
            "-C",
            "1",
            "-W",
            "15",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with running(node):
            out, err = await asyncio.wait_for(sub.communicate(), 20)
        assert sub.returncode == 0, err.decode()
        assert json.loads(out)["state"] == "online"
        assert node.link.connects >= 1
    # (mosquitto writes its log out when it stops)
    log = (tmp_path / "tls-broker" / "mosquitto.log").read_text()
    assert re.search(r"as asset-tracker-edge-garage \(p\d, c1, k5, u'garage'\)", log), log


async def test_wrong_password_is_refused_and_no_credential_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "garage", PASSWORD],
        check=True,
        capture_output=True,
    )
    broker = Mosquitto(
        tmp_path / "auth-broker", extra_conf=f"user root\npassword_file {passwords}\n"
    )
    broker.allow_anonymous = False
    broker.start()
    wrong = "wr0ng-" + PASSWORD
    try:
        bad = EdgeNode(
            edge_config(tmp_path / "bad", broker, {}, username="garage", password=wrong),
            StaticSettings(),
        )
        async with running(bad):
            await wait_until(lambda: bad.link.last_error is not None)
            await asyncio.sleep(0.5)
        assert bad.link.connects == 0
        assert "not authori" in (bad.link.last_error or "").lower()
        good = EdgeNode(
            edge_config(tmp_path / "good", broker, {}, username="garage", password=PASSWORD),
            StaticSettings(),
        )
        async with running(good):
            await wait_until(lambda: good.link.connects == 1)
            health = json.dumps(good.health())
            await good.emit(EdgeEvent("presence", Priority.CRITICAL, "dog", {"state": "away"}))
            await good.flush()
        for secret in (PASSWORD, wrong):
            assert secret not in caplog.text
            assert secret not in health
            assert secret not in repr(good.link.options)
            assert secret not in repr(bad.link.options)
            assert secret not in json.dumps(good.announcement())
    finally:
        broker.stop()
