"""Drives a real Home Assistant (`hass`) process: configuration folder, start and stop, onboarding,
login, tokens, config flows and a small REST + WebSocket client.

Used by the end-to-end tests and by `make demo`. Everything talks to 127.0.0.1 only. The WebSocket
client is aiohttp's (Home Assistant's own HTTP library, so it is always installed next to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from homeassistant.const import __version__ as HA_VERSION
from mosquitto_broker import Mosquitto

REPO = Path(__file__).resolve().parents[2]
# ASSET_TRACKER_HASS_VENV: the `hass` process runs from this Python environment (one of the
# end-to-end version matrix, tests/e2e/ha-versions.txt) instead of the one running the tests
HASS_VENV = os.environ.get("ASSET_TRACKER_HASS_VENV", "")
HASS_PYTHON = str(Path(HASS_VENV) / "bin" / "python") if HASS_VENV else sys.executable
INTEGRATION = REPO / "custom_components" / "asset_tracker"
BLUEPRINTS = REPO / "blueprints" / "automation" / "asset_tracker"
CLIENT_NAME = "asset-tracker"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hass_version() -> str:
    """The version of the Home Assistant the `hass` process runs."""
    if not HASS_VENV:
        return HA_VERSION
    code = "from homeassistant.const import __version__; print(__version__)"
    return subprocess.run(
        [HASS_PYTHON, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()


def write_config(
    config_dir: Path,
    port: int,
    *,
    automations: list[dict[str, Any]] | None = None,
    debug_integration: bool = False,
) -> None:
    """A minimal configuration: the frontend and what the integration and dashboard use, no
    `default_config` (its cloud, discovery and voice parts would reach for the network)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    custom = config_dir / "custom_components"
    custom.mkdir(exist_ok=True)
    link = custom / "asset_tracker"
    if not link.is_symlink():
        if link.exists():
            shutil.rmtree(link)
        link.symlink_to(INTEGRATION, target_is_directory=True)
    blueprints = config_dir / "blueprints" / "automation"
    blueprints.mkdir(parents=True, exist_ok=True)
    if (blueprints / "asset_tracker").exists():
        shutil.rmtree(blueprints / "asset_tracker")
    shutil.copytree(BLUEPRINTS, blueprints / "asset_tracker")
    level = "debug" if debug_integration else "info"
    config: dict[str, Any] = {
        "homeassistant": {
            "name": "Asset Tracker",
            "latitude": 52.3731,
            "longitude": 4.8922,
            "elevation": 0,
            "unit_system": "metric",
            "time_zone": "UTC",
            "currency": "EUR",
            "country": "NL",
            "internal_url": f"http://127.0.0.1:{port}",
        },
        # no `http:` here: Home Assistant takes HTTP settings from its own store now and raises a
        # repair for YAML it migrates; `write_http_store` writes them where it reads them
        "frontend": {},
        "config": {},
        "api": {},
        "history": {},
        "logbook": {},
        "person": {},
        "notify": {},
        "recorder": {"commit_interval": 1, "purge_keep_days": 3},
        "logger": {
            "default": "warning",
            "logs": {
                "custom_components.asset_tracker": level,
                "homeassistant.setup": "info",
                "homeassistant.components.automation": "info",
            },
        },
        "automation": "!include automations.yaml",
    }
    text = yaml.safe_dump(config, sort_keys=False).replace(
        "'!include automations.yaml'", "!include automations.yaml"
    )
    (config_dir / "configuration.yaml").write_text(text)
    write_http_store(config_dir, port)
    dismiss_the_installation_method_notice(config_dir)
    skip_onboarding_but_the_user(config_dir)
    (config_dir / "automations.yaml").write_text(yaml.safe_dump(automations or [], sort_keys=False))


def write_http_store(config_dir: Path, port: int) -> None:
    """The HTTP server's settings (loopback, our port) in Home Assistant's `http` store, as its
    settings page saves them: its first version, which Home Assistant migrates and validates on
    load. With the settings in YAML instead it raises a "deprecated YAML" repair, and keeps the
    migrated settings on trial (reverted after five minutes) until they are confirmed."""
    storage = config_dir / ".storage"
    storage.mkdir(exist_ok=True)
    data = {"server_host": ["127.0.0.1"], "server_port": port}
    (storage / "http").write_text(
        json.dumps({"version": 1, "minor_version": 1, "key": "http", "data": data})
    )


def dismiss_the_installation_method_notice(config_dir: Path) -> None:
    """Home Assistant run from a Python environment, as here, calls itself a "Core"
    installation and raises an "Unsupported installation method" repair after every start. That
    is about how the demo and the tests run Home Assistant, not about the integration, and a user
    of the integration runs Home Assistant OS or a container: the notice is marked ignored in
    the issue registry while Home Assistant is stopped (Settings -> Repairs -> Show ignored lists
    it); a configuration made before this keeps its other issues."""
    storage = config_dir / ".storage"
    storage.mkdir(exist_ok=True)
    path = storage / "repairs.issue_registry"
    store: dict[str, Any] = {
        "version": 1,
        "minor_version": 2,
        "key": "repairs.issue_registry",
        "data": {"issues": []},
    }
    if path.exists():
        store = json.loads(path.read_text())
    issues: list[dict[str, Any]] = store["data"]["issues"]
    key = ("homeassistant", "deprecated_method")
    mine = next((i for i in issues if (i["domain"], i["issue_id"]) == key), None)
    if mine is None:
        mine = {"created": datetime.now(UTC).isoformat(), "domain": key[0], "issue_id": key[1]}
        mine["is_persistent"] = False
        issues.append(mine)
    if mine.get("dismissed_version"):
        return
    mine["dismissed_version"] = hass_version()
    path.write_text(json.dumps(store))


def skip_onboarding_but_the_user(config_dir: Path) -> None:
    """Marks the location, analytics and integration steps of onboarding done (they would set up
    weather, radio and translation integrations that reach for the internet); the owner is still
    created through the onboarding API, as the frontend does it."""
    storage = config_dir / ".storage"
    storage.mkdir(exist_ok=True)
    path = storage / "onboarding"
    if path.exists():
        return
    done = ["core_config", "analytics", "integration"]
    path.write_text(
        json.dumps({"version": 4, "minor_version": 1, "key": "onboarding", "data": {"done": done}})
    )


class HassProcess:
    """One `hass` process on a loopback port; its output goes to `config_dir/hass.out`."""

    def __init__(self, config_dir: Path, port: int) -> None:
        self.config_dir = config_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.config_dir / "hass.out"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    HASS_PYTHON,
                    "-m",
                    "homeassistant",
                    "-c",
                    str(self.config_dir),
                    "--skip-pip",
                    "--log-no-color",
                    "--log-file",
                    str(self.config_dir / "home-assistant.log"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.starts += 1

    async def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the HTTP server answers and Home Assistant reports itself running."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"hass exited with {self.proc.returncode}: {self.tail()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{self.url}/manifest.json") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise TimeoutError(f"hass did not answer on {self.url}: {self.tail()}")

    def stop(self, timeout: float = 60.0) -> None:
        """A clean stop (SIGTERM: Home Assistant saves its stores and says goodbye on MQTT)."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        path = self.config_dir / "home-assistant.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int
    client_id: str
    hass_url: str

    def local_storage(self) -> dict[str, Any]:
        """The shape the frontend keeps in localStorage `hassTokens`."""
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_in": self.expires_in,
            "token_type": "Bearer",
            "hassUrl": self.hass_url,
            "clientId": self.client_id,
            "expires": int(time.time() * 1000) + self.expires_in * 1000,
        }


class HassApiError(RuntimeError):
    pass


class HassClient:
    """REST calls with a bearer token, and the auth flows that produce one."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client_id = f"{url}/"
        self.token: str | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def onboarded(self) -> bool:
        async with self.session.get(f"{self.url}/api/onboarding") as resp:
            if resp.status == 404:
                # once every step is done, Home Assistant stops serving the onboarding API
                return True
            resp.raise_for_status()
            steps = await resp.json()
        return all(step["done"] for step in steps)

    async def onboard(self, name: str, username: str, password: str) -> Tokens:
        """The owner user, as the frontend's onboarding creates it (the other steps are marked
        done in the configuration folder)."""
        body = {
            "client_id": self.client_id,
            "name": name,
            "username": username,
            "password": password,
            "language": "en",
        }
        code = (await self._post_json("/api/onboarding/users", body, auth=False))["auth_code"]
        return await self._token(code)

    async def login(self, username: str, password: str) -> Tokens:
        """The login flow of the login page, then the code for tokens."""
        flow = await self._post_json(
            "/auth/login_flow",
            {
                "client_id": self.client_id,
                "handler": ["homeassistant", None],
                "redirect_uri": f"{self.url}/?auth_callback=1",
            },
            auth=False,
        )
        result = await self._post_json(
            f"/auth/login_flow/{flow['flow_id']}",
            {"client_id": self.client_id, "username": username, "password": password},
            auth=False,
        )
        if result.get("type") != "create_entry":
            raise HassApiError(f"login refused: {result}")
        return await self._token(result["result"])

    async def _token(self, code: str) -> Tokens:
        form = {"grant_type": "authorization_code", "code": code, "client_id": self.client_id}
        async with self.session.post(f"{self.url}/auth/token", data=form) as resp:
            if resp.status != 200:
                raise HassApiError(f"token: {resp.status} {await resp.text()}")
            data = await resp.json()
        self.token = data["access_token"]
        return Tokens(
            data["access_token"],
            data["refresh_token"],
            int(data["expires_in"]),
            self.client_id,
            self.url,
        )

    def _headers(self, auth: bool) -> dict[str, str]:
        if not auth:
            return {}
        if self.token is None:
            raise HassApiError("not logged in")
        return {"Authorization": f"Bearer {self.token}"}

    async def _post_json(self, path: str, body: Any, *, auth: bool = True) -> Any:
        async with self.session.post(
            f"{self.url}{path}", json=body, headers=self._headers(auth)
        ) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise HassApiError(f"POST {path}: {resp.status} {text}")
            return json.loads(text) if text else None

    async def post(self, path: str, body: Any) -> Any:
        return await self._post_json(path, body)

    async def get(self, path: str) -> Any:
        async with self.session.get(f"{self.url}{path}", headers=self._headers(True)) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise HassApiError(f"GET {path}: {resp.status} {text}")
            return json.loads(text)

    async def upload_image(self, png: bytes, filename: str) -> str:
        """A PNG uploaded the way the UI uploads a picture (the image upload); returns its id."""
        form = aiohttp.FormData()
        form.add_field("file", png, filename=filename, content_type="image/png")
        async with self.session.post(
            f"{self.url}/api/image/upload", data=form, headers=self._headers(True)
        ) as resp:
            if resp.status != 200:
                raise HassApiError(f"image upload: {resp.status} {await resp.text()}")
            return str((await resp.json())["id"])

    async def states(self) -> dict[str, dict[str, Any]]:
        return {s["entity_id"]: s for s in await self.get("/api/states")}

    async def run_flow(self, handler: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
        """Starts a config flow and answers its forms with `steps`, one per form (a menu step is
        answered with {"next_step_id": ...}); returns the final result."""
        result = await self.post("/api/config/config_entries/flow", {"handler": handler})
        return await self.continue_flow(result, steps)

    async def continue_flow(
        self, result: dict[str, Any], steps: list[dict[str, Any]]
    ) -> dict[str, Any]:
        answers = iter(steps)
        while result.get("type") in ("form", "menu"):
            answer = next(answers, None)
            if answer is None:
                raise HassApiError(f"flow asks for more than was given: {result}")
            result = await self.post(f"/api/config/config_entries/flow/{result['flow_id']}", answer)
        return result

    async def flows_in_progress(self, handler: str) -> list[dict[str, Any]]:
        async with websocket(self) as ws:
            flows = await ws.call("config_entries/flow/progress")
        return [f for f in flows if f["handler"] == handler]

    async def config_entries(self, domain: str) -> list[dict[str, Any]]:
        return list(await self.get(f"/api/config/config_entries/entry?domain={domain}"))

    async def setup_mqtt(self, host: str, port: int) -> dict[str, Any]:
        """The MQTT integration pointed at a broker, the way a user adds it."""
        existing = await self.config_entries("mqtt")
        if existing:
            return existing[0]
        answer = {
            "broker": host,
            "port": port,
            "other_settings": {"set_client_cert": False, "set_ca_cert": "off", "transport": "tcp"},
        }
        result = await self.run_flow("mqtt", [answer])
        if result.get("type") != "create_entry":
            raise HassApiError(f"mqtt flow: {result}")
        return dict(result["result"])


@dataclass
class HassWebSocket:
    """The WebSocket API: `call` sends a command and returns its result; `subscribe` gives a queue
    of the messages of a subscription."""

    ws: aiohttp.ClientWebSocketResponse
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    _subscriptions: dict[int, asyncio.Queue[Any]] = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            for item in data if isinstance(data, list) else [data]:
                self._dispatch(item)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(HassApiError("websocket closed"))

    def _dispatch(self, item: dict[str, Any]) -> None:
        ident = item.get("id")
        if item.get("type") == "event" and ident in self._subscriptions:
            self._subscriptions[ident].put_nowait(item["event"])
        elif item.get("type") == "result" and ident in self._pending:
            fut = self._pending.pop(ident)
            if fut.done():
                return
            if item.get("success"):
                fut.set_result(item.get("result"))
            else:
                fut.set_exception(HassApiError(str(item.get("error"))))

    async def call(self, msg_type: str, timeout: float = 30.0, **payload: Any) -> Any:
        ident = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        await self.ws.send_json({"id": ident, "type": msg_type, **payload})
        return await asyncio.wait_for(fut, timeout)

    async def subscribe(self, msg_type: str, **payload: Any) -> asyncio.Queue[Any]:
        ident = next(self._ids)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._subscriptions[ident] = queue
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        await self.ws.send_json({"id": ident, "type": msg_type, **payload})
        await asyncio.wait_for(fut, 30)
        return queue

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


@contextlib.asynccontextmanager
async def websocket(client: HassClient) -> AsyncIterator[HassWebSocket]:
    ws = await client.session.ws_connect(f"{client.url}/api/websocket", max_msg_size=0)
    hello = await ws.receive_json()
    if hello.get("type") != "auth_required":
        raise HassApiError(f"unexpected greeting {hello}")
    await ws.send_json({"type": "auth", "access_token": client.token})
    answer = await ws.receive_json()
    if answer.get("type") != "auth_ok":
        raise HassApiError(f"websocket auth: {answer}")
    conn = HassWebSocket(ws)
    conn.start()
    try:
        yield conn
    finally:
        await conn.close()


async def first_start(
    hass_proc: HassProcess, login: tuple[str, str, str], mqtt: tuple[str, int]
) -> tuple[HassClient, Tokens]:
    """After the first start of a fresh configuration: owner user and MQTT set up. Returns a
    logged-in client and the owner's tokens."""
    client = HassClient(hass_proc.url)
    name, username, password = login
    if await client.onboarded():
        tokens = await client.login(username, password)
    else:
        tokens = await client.onboard(name, username, password)
    await client.setup_mqtt(*mqtt)
    return client, tokens


def plain_config(hass: HassProcess) -> None:
    write_config(hass.config_dir, hass.port)


@contextlib.contextmanager
def broker_and_hass(
    work: Path,
    configure: Callable[[HassProcess], None] = plain_config,
    *,
    broker_conf: str = "",
    tail_on_error: int = 0,
) -> Iterator[tuple[Mosquitto, HassProcess]]:
    """A fresh `work` folder, mosquitto and a `hass` (configured by `configure`) started on free
    ports; both stopped after. `tail_on_error` lines of hass's output go to stderr when the body
    fails: a benchmark has no test report to show them in."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    broker = Mosquitto(work / "mosquitto", extra_conf=broker_conf)
    broker.start()
    hass = HassProcess(work / "ha", free_port())
    configure(hass)
    try:
        hass.start()
        yield broker, hass
    except BaseException:
        if tail_on_error:
            print(hass.tail(tail_on_error), file=sys.stderr)
        raise
    finally:
        hass.stop()
        broker.stop()


async def ready_with_integration(
    hass_proc: HassProcess, login: tuple[str, str, str], broker: Mosquitto
) -> tuple[Tokens, str]:
    """Once `hass` answers: owner, MQTT and the Asset Tracker entry set up as a user would; the
    owner's tokens and the entry's id."""
    await hass_proc.wait_ready()
    client, tokens = await first_start(hass_proc, login, (broker.host, broker.port))
    entry = await ensure_integration(client)
    await client.close()
    return tokens, str(entry["entry_id"])


async def ensure_integration(client: HassClient, root: str = "asset_tracker") -> dict[str, Any]:
    """The Asset Tracker config entry for `root`: the existing one, the discovered one confirmed
    (a node that announced itself first), or one added by hand."""
    if entries := await client.config_entries("asset_tracker"):
        return entries[0]
    for flow in await client.flows_in_progress("asset_tracker"):
        result = await client.post(f"/api/config/config_entries/flow/{flow['flow_id']}", {})
        if result.get("type") == "create_entry":
            return dict(result["result"])
    result = await client.run_flow("asset_tracker", [{"root_topic": root}])
    if result.get("type") != "create_entry":
        raise HassApiError(f"asset_tracker flow: {result}")
    return dict(result["result"])


async def trackers(client: HassClient) -> list[str]:
    """The entity ids of the Asset Tracker's device trackers, from the entity registry."""
    async with websocket(client) as ws:
        entities = await ws.call("config/entity_registry/list")
    return [
        e["entity_id"]
        for e in entities
        if e["platform"] == "asset_tracker" and str(e["unique_id"]).endswith(":tracker")
    ]


async def long_lived_token(client: HassClient, name: str = CLIENT_NAME) -> str:
    async with websocket(client) as ws:
        token: str = await ws.call("auth/long_lived_access_token", client_name=name, lifespan=3650)
    return token


async def wait_for(
    probe: Any, timeout: float, interval: float = 0.2, what: str = "condition"
) -> Any:
    """Polls the coroutine function `probe` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout} s (last: {last!r})")
