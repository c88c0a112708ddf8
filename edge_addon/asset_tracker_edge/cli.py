"""`asset-tracker-edge run | simulate | check-config`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import ConfigError, file_problems, load, merge, validate
from .preflight import system_bus_problem

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .simulator import Simulator

_LOGGER = logging.getLogger("asset_tracker_edge")
TICK_S = 1.0
SHUTDOWN_TIMEOUT_S = 15.0
# the node's orderly stop: committed events sent and published, final health, `offline`
GOODBYE_TIMEOUT_S = 10.0
PARSER_LOGGERS = ("bthome_ble", "xiaomi_ble", "govee_ble", "ruuvitag_ble", "ibeacon_ble")
EXIT_STUCK = 70  # EX_SOFTWARE: systemd's Restart=on-failure starts a fresh process


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="asset-tracker-edge",
        description="Asset Tracker edge node: BLE tags in, ordered events to Home Assistant.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="scan BLE with the local Bluetooth adapter (BlueZ)")
    run.add_argument("--config", type=Path, required=True, help="YAML or JSON configuration file")
    sim = sub.add_parser("simulate", help="run a node on simulated tags (demo, tests, benchmarks)")
    sim.add_argument("--config", type=Path, help="configuration file (optional)")
    sim.add_argument("--node", help="node id (default: from the file, else 'sim')")
    sim.add_argument("--mqtt-host", help="broker host")
    sim.add_argument("--mqtt-port", type=int, help="broker port")
    sim.add_argument("--data", type=Path, help="state folder (outbox, clock, settings)")
    sim.add_argument("--rate", type=float, help="adverts per second")
    sim.add_argument("--tags", type=int, help="number of moving tags")
    sim.add_argument("--sensors", type=int, help="number of sensor tags")
    sim.add_argument("--nodes", help="comma-separated node ids that share the simulated space")
    sim.add_argument("--seed", type=int, help="random seed")
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file", type=Path)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.log_level != "DEBUG":
        # the parsers log an error for every odd advert a neighbour's device sends; the decoder
        # counts those (health: decode_errors), so the log says nothing per advert
        for library in PARSER_LOGGERS:
            logging.getLogger(library).setLevel(logging.CRITICAL)
    try:
        if args.command == "check-config":
            return check_config(args.file)
        simulated = args.command == "simulate"
        config = _checked(simulate_config(args) if simulated else load(args.config))
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(config, simulated=simulated))
    except ConfigError as err:
        for problem in err.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    return 0


def _checked(config: dict[str, Any]) -> dict[str, Any]:
    """A file the configuration names and this host lacks is a problem of the configuration:
    with it no session could ever start."""
    if problems := file_problems(config):
        raise ConfigError(problems)
    return config


def check_config(path: Path) -> int:
    try:
        config = _checked(load(path, environ={}))
    except ConfigError as err:
        for problem in err.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    # the host, not the file: a warning, as the file may be checked on another machine
    if bus := system_bus_problem():
        print(f"warning: {bus}", file=sys.stderr)
    print(
        f"{path}: valid; node {config['node']['id']}, {len(config['assets'])} assets, "
        f"broker {config['mqtt']['host']}"
    )
    return 0


def simulate_config(args: argparse.Namespace) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if args.config is not None:
        raw = load(args.config)
    overrides: dict[str, Any] = {"node": {}, "mqtt": {}, "storage": {}, "simulator": {}}
    overrides["node"]["id"] = args.node or raw.get("node", {}).get("id", "sim")
    for value, section, key in (
        (args.mqtt_host, "mqtt", "host"),
        (args.mqtt_port, "mqtt", "port"),
        (str(args.data) if args.data else None, "storage", "path"),
        (args.rate, "simulator", "rate_per_s"),
        (args.tags, "simulator", "tags"),
        (args.sensors, "simulator", "sensors"),
        (args.nodes.split(",") if args.nodes else None, "simulator", "nodes"),
        (args.seed, "simulator", "seed"),
    ):
        if value is not None:
            overrides[section][key] = value
    config = validate(merge(raw, overrides))
    if not config["assets"]:
        from .simulator import Simulator  # check-config and --help stay light

        sim = Simulator(config, config["node"]["id"])
        config = validate({**config, "assets": sim.assets()})
    return config


async def serve(config: dict[str, Any], simulated: bool) -> None:
    """Runs the node until SIGTERM or SIGINT; never exits on a broker or adapter outage."""
    # the node's stack (parsers, MQTT, outbox) loads here, so check-config and --help start fast
    from .node import EdgeNode
    from .pipeline import Pipeline
    from .settings import RuntimeSettings, defaults_from
    from .supervisor import SupervisorClient
    from .watchdog import ServiceNotifier

    storage = Path(config["storage"]["path"])
    try:
        await asyncio.to_thread(storage.mkdir, parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError([_storage_problem(storage, err)]) from None
    settings = RuntimeSettings(defaults_from(config), storage / "settings.json")
    node = EdgeNode(config, settings)
    # the asset list Home Assistant sent last (persisted by the node) with the YAML assets
    pipeline = Pipeline({**config, "assets": node.assets.effective()}, settings, node.emit)
    node.assets.subscribe(pipeline.set_assets)
    source = _source(config, simulated, pipeline)
    node.set_snapshot_provider(pipeline.snapshot)
    node.set_heard_provider(pipeline.heard_report)
    node.add_health_provider("scanner", lambda: {**source.health(), **pipeline.health()})
    notifier = ServiceNotifier()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await pipeline.decoder.async_setup()
    tasks = [
        asyncio.create_task(node.run(), name="node"),
        asyncio.create_task(source.run(pipeline.handle_advert), name="source"),
        asyncio.create_task(_ticker(pipeline), name="ticker"),
    ]
    helpers: list[asyncio.Task[Any]] = [
        asyncio.create_task(notifier.run_watchdog(lambda: source.health()["state"] != "error"))
    ]
    supervisor = SupervisorClient.from_environ()
    if supervisor is not None:
        root, node_id = config["mqtt"]["root_topic"], config["node"]["id"]
        helpers.append(asyncio.create_task(supervisor.announce_until_done(root, node_id)))
    notifier.ready()
    _LOGGER.info(
        "Edge node %s started (%s)", config["node"]["id"], "simulated" if simulated else "BLE"
    )
    await _until_stopped(stop, tasks, graceful={tasks[0]: node.request_stop})
    for helper in helpers:
        helper.cancel()
    notifier.stopping()
    pipeline.presence.save()


def _storage_problem(storage: Path, err: OSError) -> str:
    return (
        f"storage.path: cannot create {storage} ({err.strerror or err}); set storage.path to a "
        "folder this user can write, or run the shipped systemd unit (its StateDirectory "
        "makes one)"
    )


async def _until_stopped(
    stop: asyncio.Event,
    tasks: list[asyncio.Task[Any]],
    graceful: Mapping[asyncio.Task[Any], Callable[[], None]],
) -> None:
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not stopper and task.exception() is not None:
            _LOGGER.error("%s stopped: %r", task.get_name(), task.exception())
    # producers first, so the node can flush and say goodbye with nothing left in flight
    stopper.cancel()
    for task in reversed(tasks):
        if task in graceful and not task.done():
            # asked, not cancelled: a cancellation would cut its goodbye short
            graceful[task]()
            await asyncio.wait({task}, timeout=GOODBYE_TIMEOUT_S)
        # repeated and bounded: on Python 3.11 asyncio.wait_for (inside aiomqtt) can swallow a
        # cancellation, and a task that swallows one must not keep the process alive
        done = set()
        for _ in range(int(SHUTDOWN_TIMEOUT_S)):
            task.cancel()
            done, _pending = await asyncio.wait({task}, timeout=1.0)
            if done:
                break
        if not done:
            # the outbox is crash-safe by design (it survives kill -9), so leaving hard is safe
            _LOGGER.error(
                "%s did not stop within %.0f s; exiting", task.get_name(), SHUTDOWN_TIMEOUT_S
            )
            logging.shutdown()
            os._exit(EXIT_STUCK)


async def _ticker(pipeline: Pipeline) -> None:
    while True:
        await asyncio.sleep(TICK_S)
        await pipeline.tick()


class _SimulatedSource:
    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator

    def health(self) -> dict[str, Any]:
        return {"state": "simulating"}

    async def run(self, on_advert: Callable[..., Any]) -> None:
        await self.simulator.run(on_advert)


class _BleSource:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.scanner: Any = None

    def health(self) -> dict[str, Any]:
        return self.scanner.health() if self.scanner else {"state": "starting"}

    async def run(self, on_advert: Callable[..., Any]) -> None:
        from .scanner import BleScanner  # bleak loads D-Bus machinery: only when scanning

        self.scanner = BleScanner(self.config["scanner"], on_advert)
        await self.scanner.run()


def _source(config: dict[str, Any], simulated: bool, pipeline: Pipeline) -> Any:
    if simulated:
        from .simulator import Simulator

        return _SimulatedSource(Simulator(config, config["node"]["id"]))
    return _BleSource(config)
