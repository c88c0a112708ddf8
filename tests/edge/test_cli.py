"""`asset-tracker-edge` as a user runs it: a real process, real mosquitto, real signals."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml
from asset_tracker_edge import protocol
from asset_tracker_edge.cli import PARSER_LOGGERS, main
from mosquitto_broker import Mosquitto

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "edge_addon" / "asset-tracker-edge.example.yaml"
ROOT = "asset_tracker"


def edge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asset_tracker_edge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def prepared_example(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The example on a host that has what it names: its CA file, and a system D-Bus."""
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    bus = tmp_path / "system_bus_socket"
    bus.touch()
    text = EXAMPLE.read_text().replace("/etc/asset-tracker/ca.crt", str(ca))
    path = tmp_path / "example.yaml"
    path.write_text(text)
    return path, {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={bus}"}


def test_check_config_accepts_the_example_on_a_prepared_host(tmp_path: Path) -> None:
    path, env = prepared_example(tmp_path)
    result = edge("check-config", str(path), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"{path}: valid; node workshop, 4 assets, broker 127.0.0.1")
    assert result.stderr == ""


BAD = {
    "missing": None,
    "invalid_yaml": "node:\n  id: n1\n mqtt: {\n",
    "not_a_mapping": "- node\n- mqtt\n",
    "unknown_key": "node: {id: n1}\nmqqt: {host: x}\n",
    "wrong_type": "node: {id: n1}\nmqtt: {port: eighty}\n",
    "out_of_range": "node: {id: n1}\npresence: {away_timeout_s: 1}\n",
    "duplicate_ids": (
        "node: {id: n1}\nassets:\n"
        "  - {id: a, match: {mac: 'aa:bb:cc:dd:ee:01'}}\n"
        "  - {id: a, match: {mac: 'aa:bb:cc:dd:ee:02'}}\n"
    ),
    "asset_without_match": "node: {id: n1}\nassets:\n  - {id: a, match: {}}\n",
}
EXPECTED = {
    "missing": "file not found",
    "invalid_yaml": "invalid YAML",
    "not_a_mapping": "the top level must be a mapping",
    "unknown_key": "error: mqqt: unknown key",
    "wrong_type": "error: mqtt.port: expected int",
    "out_of_range": "error: presence.away_timeout_s: value must be at least 5",
    "duplicate_ids": "error: assets: duplicate asset ids: a",
    "asset_without_match": "error: assets.0.match: needs one of mac, ibeacon, eddystone or irk",
}


async def edge_async(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asset_tracker_edge", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_check_config_rejects_bad_input_with_one_line_and_no_traceback(
    tmp_path: Path,
) -> None:
    paths = {}
    for case, text in BAD.items():
        (tmp_path / case).mkdir()
        paths[case] = (
            tmp_path / case / "absent.yaml" if text is None else write(tmp_path / case, text)
        )
    # one process per case, all at once: each pays the interpreter's start-up only in parallel
    results = await asyncio.gather(*(edge_async("check-config", str(p)) for p in paths.values()))
    for case, (returncode, stdout, stderr) in zip(paths, results, strict=True):
        assert returncode == 1, case
        assert stdout == "", case
        lines = stderr.splitlines()
        assert len(lines) == 1, (case, stderr)
        assert lines[0].startswith("error: "), case
        assert EXPECTED[case] in lines[0], (case, lines[0])
        assert "Traceback" not in stderr


@pytest.mark.parametrize(("level", "quiet"), [("INFO", True), ("DEBUG", False)])
def test_parser_libraries_say_nothing_per_advert_unless_debugging(
    level: str, quiet: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for library in PARSER_LOGGERS:
        monkeypatch.setattr(logging.getLogger(library), "level", logging.NOTSET)
    path, _env = prepared_example(tmp_path)
    assert main(["--log-level", level, "check-config", str(path)]) == 0
    levels = {logging.getLogger(library).level for library in PARSER_LOGGERS}
    assert levels == ({logging.CRITICAL} if quiet else {logging.NOTSET})


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_config_in_process_returns_1_with_the_same_line(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = BAD[case]
    path = tmp_path / "absent.yaml" if text is None else write(tmp_path, text)
    assert main(["check-config", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert EXPECTED[case] in line


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "node: {id: N 1}\nmqtt: {port: 0, keepalive_s: 1}\nextra: 1\n")
    result = edge("check-config", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: extra: unknown key",
        "error: mqtt.keepalive_s: value must be at least 5",
        "error: mqtt.port: value must be at least 1",
        "error: node.id: does not match regular expression ^[a-z0-9][a-z0-9_-]{0,31}$",
    ]


def test_check_config_ignores_the_environment_but_run_does_not(tmp_path: Path) -> None:
    # check-config judges the file alone; the node itself applies ASSET_TRACKER__* overrides
    path, env = prepared_example(tmp_path)
    env["ASSET_TRACKER__MQTT__PORT"] = "99999"
    assert edge("check-config", str(path), env=env).returncode == 0
    result = edge("run", "--config", str(path), env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: mqtt.port: value must be at most 65535"]


def test_run_with_a_bad_file_exits_2_without_touching_the_radio(tmp_path: Path) -> None:
    assert main(["run", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert main(["simulate", "--config", str(write(tmp_path, "node: {id: n1}\nx: 1\n"))]) == 2


async def test_help_names_every_command() -> None:
    (rc, top, _), (sub_rc, sub, _), (bad_rc, _, bad), (v_rc, version, _) = await asyncio.gather(
        edge_async("--help"),
        edge_async("simulate", "--help"),
        edge_async("teleport"),
        edge_async("--version"),
    )
    assert rc == 0
    for command in ("run", "simulate", "check-config"):
        assert command in top
    assert sub_rc == 0
    for option in ("--mqtt-host", "--mqtt-port", "--rate", "--tags", "--sensors", "--seed"):
        assert option in sub
    assert bad_rc == 2
    assert "invalid choice: 'teleport'" in bad
    assert "Traceback" not in bad
    assert v_rc == 0
    assert version.startswith("asset-tracker-edge ")


def host_online() -> bytes:
    hlc = [int(time.time() * 1000), 0]
    return json.dumps({"v": 1, "state": "online", "protocols": [1], "hlc": hlc}).encode()


async def collect(
    broker: Mosquitto, node: str, done: Any, timeout: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Events and status messages of `node` until `done(events)` or the timeout."""
    events: list[dict[str, Any]] = []
    statuses: list[dict[str, Any]] = []
    async with aiomqtt.Client(broker.host, broker.port, identifier="cli-test") as client:
        await client.publish(f"{ROOT}/host/status", host_online(), qos=1, retain=True)
        await client.subscribe(f"{ROOT}/{node}/#", qos=1)
        try:
            async with asyncio.timeout(timeout):
                async for message in client.messages:
                    topic, payload = str(message.topic), bytes(message.payload)
                    decoded = protocol.decode(ROOT, topic, payload)
                    if decoded.kind == "events":
                        assert decoded.invalid_events == ()
                        events += decoded.message["events"]
                        if done(events):
                            break
                    elif decoded.kind == "status":
                        statuses.append(decoded.message)
        except TimeoutError:
            pass
    return events, statuses


async def retained_status(broker: Mosquitto, node: str) -> dict[str, Any]:
    async with aiomqtt.Client(broker.host, broker.port, identifier="cli-test-2") as client:
        await client.subscribe(f"{ROOT}/{node}/status", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                return protocol.decode(ROOT, str(message.topic), bytes(message.payload)).message
    raise AssertionError("no retained status")


TAGS, SENSORS = 3, 2


def complete(events: list[dict[str, Any]]) -> bool:
    present = {e["asset"] for e in events if e["kind"] == "presence"}
    telemetry = {e["asset"] for e in events if e["kind"] == "telemetry"}
    # the simulator takes the last tag away for two minutes of every ten (wall clock)
    return {"tag_1", "tag_2"} <= present and {"freezer", "sensor_2"} <= telemetry


async def test_simulate_publishes_presence_and_telemetry_and_stops_cleanly_on_sigterm(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = {
        "node": {"id": "cli"},
        "storage": {"path": str(tmp_path / "data"), "commit_window_ms": 10},
        "batching": {"window_ms": 100},
        "telemetry": {"interval_s": 1},
    }
    path = write(tmp_path, yaml.safe_dump(config))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asset_tracker_edge", "simulate", "--config", str(path),
        "--mqtt-host", mosquitto.host, "--mqtt-port", str(mosquitto.port),
        "--rate", "100", "--tags", str(TAGS), "--sensors", str(SENSORS), "--seed", "3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        events, statuses = await collect(mosquitto, "cli", complete, timeout=30)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    log = stderr.decode(errors="replace")
    assert complete(events), (events[:20], log[-3000:])
    assert process.returncode == 0, log[-3000:]
    assert "Traceback" not in log
    assert any(s["state"] == "online" for s in statuses)
    # only the simulated, allow-listed assets appear; presence says present with a distance
    assets = {f"tag_{i + 1}" for i in range(TAGS)} | {"freezer", "sensor_2"}
    assert {e["asset"] for e in events if e["asset"] is not None} <= assets
    for event in events:
        if event["kind"] == "presence" and event["data"]["state"] == "present":
            assert event["data"]["distance_m"] > 0
            assert -127 <= event["data"]["rssi"] <= 20
    freezer = [e for e in events if e["kind"] == "telemetry" and e["asset"] == "freezer"]
    assert -30 < freezer[0]["data"]["readings"]["temperature"] < 0
    assert 0 <= freezer[0]["data"]["readings"]["humidity"] <= 100
    seqs = [e["seq"] for e in events]
    assert len(seqs) == len(set(seqs))  # nothing doubled
    # the goodbye: a retained offline status
    assert (await retained_status(mosquitto, "cli"))["state"] == "offline"
    # presence survives the stop
    saved = json.loads((tmp_path / "data" / "presence.json").read_text())
    assert saved["tag_1"]["state"] == "present"


# --- a standalone node's first run, as a new user tries it: the example, pip install ./edge_addon


def test_check_config_names_the_missing_ca_file_of_the_example() -> None:
    result = edge("check-config", str(EXAMPLE))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: mqtt.tls.ca_file: /etc/asset-tracker/ca.crt does not exist; put the CA "
        "certificate that signed the broker's certificate there or set mqtt.tls.ca_file to "
        "where it is, or leave ca_file out to trust the system's CA certificates"
    ]


def test_check_config_warns_of_a_host_without_the_system_d_bus(tmp_path: Path) -> None:
    path, _env = prepared_example(tmp_path)
    absent = tmp_path / "no" / "system_bus_socket"
    result = edge("check-config", str(path), env={"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={absent}"})
    assert result.returncode == 0  # the file is valid; the host lacks a service
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"warning: scanner: no system D-Bus at {absent}, so BlueZ cannot")
    assert "sudo apt install bluez && sudo systemctl enable --now bluetooth" in line


def test_check_config_reports_duplicate_ids_with_the_other_asset_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "node: {id: n1}\nassets:\n"
        "  - {id: freezer, match: {mac: 'aa:bb:cc:dd:ee:01'}}\n"
        "  - {id: freezer, match: {mac: 'not a mac'}}\n",
    )
    result = edge("check-config", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: assets.1.match.mac: does not match regular expression "
        "^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$",
        "error: assets: duplicate asset ids: freezer; give each asset an id of its own",
    ]


def test_run_with_the_example_stops_at_the_missing_ca_file_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: the MQTT link logged "[Errno 2] No such file or directory" on every retry."""
    assert main(["run", "--config", str(EXAMPLE)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: mqtt.tls.ca_file: /etc/asset-tracker/ca.crt does not exist")


def test_run_says_when_it_cannot_create_its_storage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    storage = tmp_path / "file" / "data"
    path = write(
        tmp_path, yaml.safe_dump({"node": {"id": "n1"}, "storage": {"path": str(storage)}})
    )
    assert main(["run", "--config", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: storage.path: cannot create {storage} (")
    assert "set storage.path to a folder this user can write" in line


def test_the_mqtt_link_names_a_tls_file_that_disappeared(tmp_path: Path) -> None:
    from asset_tracker_edge.transport import TlsFileError, TlsOptions, tls_context

    missing = tmp_path / "ca.crt"
    with pytest.raises(TlsFileError, match=f"mqtt.tls.ca_file: {missing} does not exist; put"):
        tls_context(TlsOptions(enabled=True, ca_file=str(missing)))
    missing.write_text("not a certificate")
    with pytest.raises(TlsFileError, match=f"mqtt.tls.ca_file: {missing} is not a usable PEM"):
        tls_context(TlsOptions(enabled=True, ca_file=str(missing)))
    with pytest.raises(TlsFileError, match=r"mqtt.tls.cert_file: .* does not exist"):
        tls_context(TlsOptions(enabled=True, cert_file=str(tmp_path / "node.crt")))


def test_the_scanner_names_what_bluez_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    from asset_tracker_edge.scanner import explain
    from bleak.exc import BleakDBusError, BleakError

    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nowhere/system_bus_socket")
    missing = FileNotFoundError(2, "No such file or directory")
    assert explain(missing, None).startswith(
        "no system D-Bus at /nowhere/system_bus_socket, so BlueZ cannot be reached; install"
    )
    unknown = BleakDBusError("org.freedesktop.DBus.Error.ServiceUnknown", [])
    assert explain(unknown, None).startswith("BlueZ (org.bluez) is not running")
    assert explain(BleakError("adapter 'hci3' not found"), "hci3").startswith(
        "Bluetooth adapter hci3 not found"
    )
    assert explain(BleakError("something else"), None) == "BleakError: something else"


async def test_run_without_bluez_logs_one_line_naming_the_d_bus_socket(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The real `run` on a host without the system D-Bus: it keeps its link to the broker and
    says once what the scanner lacks, not "[Errno 2] No such file or directory"."""
    config = {
        "node": {"id": "nobus"},
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port},
        "storage": {"path": str(tmp_path / "data")},
    }
    path = write(tmp_path, yaml.safe_dump(config))
    absent = tmp_path / "system_bus_socket"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asset_tracker_edge", "run", "--config", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={absent}"},
    )  # fmt: skip
    assert process.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not any("Scanner failed" in line for line in lines):
                lines.append((await process.stderr.readline()).decode())
            await asyncio.sleep(2.5)  # a retry or two: the line is not repeated
    finally:
        process.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(process.communicate(), timeout=30)
    log = "".join(lines) + rest.decode(errors="replace")
    failures = [line for line in log.splitlines() if "Scanner failed" in line]
    assert len(failures) == 1, log
    assert f"no system D-Bus at {absent}, so BlueZ cannot be reached" in failures[0]
    assert "Errno" not in log and "Traceback" not in log
