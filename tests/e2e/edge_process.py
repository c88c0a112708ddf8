"""Runs the edge node as its own process in simulation mode (`asset-tracker-edge simulate`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def demo_edge_config(
    workdir: Path,
    host: str,
    port: int,
    *,
    node: str = "demo",
    area: str = "Workshop",
    tags: int = 4,
    sensors: int = 2,
    seed: int = 1,
    rate_per_s: float = 20,
    anomalies: bool = True,
) -> dict[str, Any]:
    """An edge configuration (edge_addon/DESIGN.md) with simulated tags and sensor tags."""
    return {
        "node": {"id": node, "name": f"{area} node", "area": area},
        "mqtt": {"host": host, "port": port, "root_topic": "asset_tracker", "keepalive_s": 10},
        "storage": {"path": str(workdir / "data"), "commit_window_ms": 20},
        "batching": {"window_ms": 500, "max_events": 200, "max_inflight": 20},
        "simulator": {
            "tags": tags,
            "sensors": sensors,
            "nodes": [node],
            "rate_per_s": rate_per_s,
            "anomalies": anomalies,
            "seed": seed,
        },
    }


def edge_command(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "asset_tracker_edge", "simulate", "--config", str(config_path)]


class EdgeProcess:
    """The edge node in simulation mode as its own process; output goes to `workdir/edge.out`."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.workdir = workdir
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "edge.out"

    @property
    def config_path(self) -> Path:
        return self.workdir / "edge.yaml"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        env = dict(os.environ)
        paths = [str(REPO / "edge_addon")]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                edge_command(self.config_path),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill9(self) -> None:
        """A crash: no last words, no flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
