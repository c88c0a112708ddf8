"""`make demo`: a local mosquitto, three edge nodes in three rooms with simulated tags (and three
tags heard that are no asset yet: Settings > Devices & services > Asset Tracker > Add asset offers
them) and a real Home Assistant with the integration, its dashboard and an anomaly-alert
automation set up; prints the URL and a login.

Everything listens on 127.0.0.1 only and lives under build/demo/ (delete it for a fresh start).
Stops everything it started on Ctrl-C or SIGTERM.

Environment: ASSET_TRACKER_DEMO_HTTP_PORT (default 8123), ASSET_TRACKER_DEMO_MQTT_PORT (default
18883), ASSET_TRACKER_DEMO_USER / ASSET_TRACKER_DEMO_PASSWORD (default demo / asset-tracker).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "edge_addon")]

from e2e.demo_scenario import ALERT_AUTOMATION, NODES, scenario_edge_configs  # noqa: E402
from e2e.edge_process import EdgeProcess  # noqa: E402
from e2e.hass_process import (  # noqa: E402
    HassProcess,
    dismiss_the_installation_method_notice,
    ensure_integration,
    first_start,
    write_config,
)
from mosquitto_broker import Mosquitto  # noqa: E402

WORK = REPO / "build" / "demo"
HTTP_PORT = int(os.environ.get("ASSET_TRACKER_DEMO_HTTP_PORT", "8123"))
MQTT_PORT = int(os.environ.get("ASSET_TRACKER_DEMO_MQTT_PORT", "18883"))
USER = os.environ.get("ASSET_TRACKER_DEMO_USER", "demo")
PASSWORD = os.environ.get("ASSET_TRACKER_DEMO_PASSWORD", "asset-tracker")


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


async def run(stop: asyncio.Event) -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(WORK / "mosquitto", port=MQTT_PORT)
    hass = HassProcess(WORK / "ha", HTTP_PORT)
    edges: dict[str, EdgeProcess] = {}
    started: list[str] = []
    try:
        broker.start()
        started.append("mosquitto")
        say(f"mosquitto on 127.0.0.1:{MQTT_PORT}")
        if not (hass.config_dir / "configuration.yaml").exists():
            write_config(hass.config_dir, HTTP_PORT, automations=[ALERT_AUTOMATION])
        dismiss_the_installation_method_notice(hass.config_dir)  # also in an earlier demo's
        hass.start()
        started.append("hass")
        say(f"starting Home Assistant (log: {hass.config_dir / 'home-assistant.log'})")
        await hass.wait_ready()
        client, _tokens = await first_start(
            hass, ("Demo", USER, PASSWORD), ("127.0.0.1", MQTT_PORT)
        )
        await ensure_integration(client)
        await client.close()
        # the scenario's 10-minute cycle starts with the nodes: the freezer's door opens after 4
        # minutes and alerts within 2 more (tests/e2e/test_demo_scenario.py checks the scenario)
        start_ms = time.time_ns() // 1_000_000
        configs = scenario_edge_configs(WORK / "edge", "127.0.0.1", MQTT_PORT, start_ms=start_ms)
        for node, config in configs.items():
            edges[node] = edge = EdgeProcess(WORK / "edge" / node, config)
            edge.start()
            say(f"edge node '{node}' in the {NODES[node]} (log: {edge.log_path})")
        started.append("edges")
        print(
            "\n"
            f"  Home Assistant: http://127.0.0.1:{HTTP_PORT}/asset-tracker\n"
            f"  login:          {USER} / {PASSWORD}\n"
            f"  MQTT broker:    127.0.0.1:{MQTT_PORT} (root topic asset_tracker)\n"
            "  Add a heard tag: Settings > Devices & services > Asset Tracker > Add asset\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stop.is_set():
            procs = [("hass", hass.proc)] + [(f"edge {n}", e.proc) for n, e in edges.items()]
            for name, proc in procs:
                if proc is not None and proc.poll() is not None:
                    say(f"{name} exited with {proc.returncode}; stopping")
                    return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        return 0
    finally:
        say("stopping " + ", ".join(reversed(started)) if started else "nothing to stop")
        for edge in edges.values():
            edge.stop()
        hass.stop()
        broker.stop()


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "demo.pid").write_text(str(os.getpid()))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return loop.run_until_complete(run(stop))
    except subprocess.SubprocessError as err:
        say(f"failed: {err}")
        return 1
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
