"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol with aiohttp.

Logs into Home Assistant the way the frontend remembers a login (the `hassTokens` key in
localStorage), opens a page, reads what rendered through the shadow DOMs and takes a screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from .hass_process import Tokens, free_port

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
)

# Collects elements of the given tag names through every open shadow root, with their text.
DEEP_QUERY = """
((tags) => {
  const found = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (tags.includes(el.localName)) {
        const text = (el.shadowRoot ? el.shadowRoot.textContent : el.textContent) || '';
        found.push({tag: el.localName, text: text.replace(/\\s+/g, ' ').trim()});
      }
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return found;
})(%s)
"""


def chromium_binary() -> str:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    raise RuntimeError("chromium is not installed: run `make setup`")


class Page:
    """One page target over its DevTools WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.console: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            self._note(data)
            fut = self._pending.pop(data.get("id", -1), None)
            if fut is not None and not fut.done():
                if "error" in data:
                    fut.set_exception(RuntimeError(str(data["error"])))
                else:
                    fut.set_result(data.get("result", {}))

    def _note(self, data: dict[str, Any]) -> None:
        """Keeps the page's console output and uncaught errors for failure messages."""
        params = data.get("params", {})
        if data.get("method") == "Runtime.consoleAPICalled":
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console.append(f"{params.get('type')}: {args}")
        elif data.get("method") == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append(f"exception: {json.dumps(details)[:1500]}")
        elif data.get("method") == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(
                f"log {entry.get('level')}: {entry.get('text')} {entry.get('url', '')}"
            )

    async def send(self, method: str, **params: Any) -> Any:
        ident = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        return await asyncio.wait_for(fut, 60)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(str(result["exceptionDetails"]))
        return result["result"].get("value")

    async def deep_query(self, *tags: str) -> list[dict[str, str]]:
        return list(await self.evaluate(DEEP_QUERY % json.dumps(list(tags))) or [])

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()


@contextlib.asynccontextmanager
async def chromium(workdir: Path, width: int = 1280, height: int = 1000) -> AsyncIterator[str]:
    """A headless Chromium; yields its DevTools HTTP endpoint."""
    port = free_port()
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    log = (workdir / "chromium.log").open("ab")
    proc = subprocess.Popen(
        [
            chromium_binary(),
            *CHROMIUM_FLAGS,
            f"--remote-debugging-port={port}",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as session:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"chromium exited with {proc.returncode}, see {log.name}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{endpoint}/json/version") as resp:
                        if resp.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise TimeoutError("chromium did not open its DevTools port")
                await asyncio.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.asynccontextmanager
async def logged_in_page(
    session: aiohttp.ClientSession, endpoint: str, tokens: Tokens
) -> AsyncIterator[Page]:
    """The first page target, with the tokens in localStorage before any Home Assistant page
    script runs (so the frontend finds a login and skips its login page)."""
    async with session.get(f"{endpoint}/json/list") as resp:
        targets = await resp.json()
    target = next(t for t in targets if t["type"] == "page")
    ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
    page = Page(ws)
    try:
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Log.enable")
        stored = json.dumps(json.dumps(tokens.local_storage()))
        origin = json.dumps(tokens.hass_url)
        await page.send(
            "Page.addScriptToEvaluateOnNewDocument",
            source=f"if (location.origin === {origin}) localStorage.setItem('hassTokens', {stored});",
        )
        yield page
    finally:
        await page.close()


@contextlib.asynccontextmanager
async def browser_page(
    workdir: Path, tokens: Tokens, width: int = 1280, height: int = 1000
) -> AsyncIterator[Page]:
    """A Chromium of its own (profile in `workdir`) and its first page, logged in with `tokens`;
    the caller navigates."""
    async with (
        chromium(workdir, width, height) as endpoint,
        aiohttp.ClientSession() as session,
        logged_in_page(session, endpoint, tokens) as page,
    ):
        yield page


async def wait_rendered(
    page: Page, tags: tuple[str, ...], count: int, timeout: float = 60.0
) -> list[dict[str, str]]:
    """Polls until at least `count` elements of `tags` rendered with some text."""
    deadline = time.monotonic() + timeout
    found: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        found = [f for f in await page.deep_query(*tags) if f["text"]]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.5)
    console = "\n".join(page.console[-30:])
    raise TimeoutError(f"{count} x {tags} not rendered, found {found}; console:\n{console}")


# The integration's floor-plan card, found through every open shadow root.
FLOOR_PLAN_CARD = """
const floorPlanCard = () => {
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.localName === 'asset-tracker-floor-plan' && el.shadowRoot) return el;
      const inner = el.shadowRoot ? walk(el.shadowRoot) : null;
      if (inner) return inner;
    }
    return null;
  };
  return walk(document);
};
"""


def on_floor_plan(body: str) -> str:
    """A page script that runs `body` with `card`, the floor-plan card; null until it is drawn."""
    return f"(() => {{{FLOOR_PLAN_CARD}const card = floorPlanCard();\nif (!card) return null;\n{body}}})()"


# The centre of the last element of a tag name (through every open shadow root) whose text has
# the needle, scrolled into view; null when none is rendered with a size yet.
FIND_CENTRE = """
((tag, needle, enabled) => {
  const found = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.localName === tag && !(enabled && (el.disabled || el.hasAttribute('disabled')))) {
        const text = (el.textContent || '') + ' ' + (el.shadowRoot ? el.shadowRoot.textContent : '');
        if (text.replace(/\\s+/g, ' ').includes(needle)) found.push(el);
      }
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  const el = found[found.length - 1];
  if (!el) return null;
  el.scrollIntoView({block: 'center'});
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) return null;
  return {x: r.left + r.width / 2, y: r.top + r.height / 2};
})(%s, %s, %s)
"""


async def find_centre(
    page: Page, tag: str, needle: str, timeout: float = 60.0, enabled: bool = False
) -> tuple[float, float]:
    """Where to click the `tag` element showing `needle`, once it is rendered (and, with
    `enabled`, not disabled: a button is drawn before the page's data lets it work)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spot = await page.evaluate(
            FIND_CENTRE % (json.dumps(tag), json.dumps(needle), json.dumps(enabled))
        )
        if spot:
            return float(spot["x"]), float(spot["y"])
        await asyncio.sleep(0.3)
    console = "\n".join(page.console[-30:])
    raise TimeoutError(f"no {tag} showing {needle!r} rendered; console:\n{console}")


NEXT_FRAMES = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


async def settled_centre(
    page: Page, tag: str, needle: str, timeout: float = 60.0, enabled: bool = True
) -> tuple[float, float]:
    """Where to click the `tag` element showing `needle` once it is enabled and has stopped
    moving (a dialog that opens, a page still laying out): the same spot two animation frames
    apart."""
    deadline = time.monotonic() + timeout
    spot = await find_centre(page, tag, needle, timeout, enabled)
    while time.monotonic() < deadline:
        await page.evaluate(NEXT_FRAMES)
        remaining = max(1.0, deadline - time.monotonic())
        last, spot = spot, await find_centre(page, tag, needle, remaining, enabled)
        if spot == last:
            return spot
    raise TimeoutError(f"the {tag} showing {needle!r} kept moving ({spot})")


async def click_at(page: Page, spot: tuple[float, float]) -> None:
    """A real left click at a point of the viewport, as a person's mouse makes it."""
    x, y = spot
    await page.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
    for kind in ("mousePressed", "mouseReleased"):
        await page.send(
            "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
        )


async def click(page: Page, tag: str, needle: str, timeout: float = 60.0) -> None:
    """Clicks the `tag` element showing `needle` once it is rendered."""
    await click_at(page, await find_centre(page, tag, needle, timeout))


async def click_on_plan(page: Page, x_m: float, y_m: float) -> None:
    """A real click on the floor-plan card's plan at (x, y), metres from its top-left corner."""
    box = await page.evaluate(
        on_floor_plan(
            "const b = card.shadowRoot.querySelector('svg').getBoundingClientRect();"
            " return [b.left, b.top, b.width, b.height, card._config.width_m,"
            " card._config.height_m];"
        )
    )
    left, top, width, height, width_m, height_m = box
    await click_at(page, (left + width * x_m / width_m, top + height * y_m / height_m))


async def calibrate_on_card(
    page: Page, asset: str, spot: tuple[float, float], timeout: float
) -> tuple[str, int]:
    """The card's calibration: `asset` (its device id or name) picked under *Calibrate with*, the
    spot clicked; the note once it answers, and the corners of the spot's mark then."""
    pick = (
        "const s = card.shadowRoot.querySelector('select.what');"
        " const o = [...s.options].find((o) => o.value.startsWith('calibrate:') &&"
        f" (o.value === 'calibrate:' + {json.dumps(asset)} || o.textContent === {json.dumps(asset)}));"
        " if (!o) return null; s.value = o.value; s.dispatchEvent(new Event('change'));"
        " return o.value;"
    )
    if not await page.evaluate(on_floor_plan(pick)):
        raise AssertionError(f"{asset} is not offered to calibrate with")
    await click_on_plan(page, *spot)
    read = on_floor_plan(
        "return [card.shadowRoot.querySelector('.note').textContent,"
        " card.shadowRoot.querySelector('polygon.draft').getAttribute('points').split(' ').length];"
    )
    deadline = time.monotonic() + timeout
    seen: list[Any] = []
    while time.monotonic() < deadline:
        seen = await page.evaluate(read)
        if seen and not seen[0].startswith(("Hold", "Calibrating")):
            return seen[0], seen[1]
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the calibration's answer not shown within {timeout} s (last: {seen})")


async def close_editor(page: Page) -> None:
    """The card's editor back to no edit (a tap on an asset opens it again)."""
    await page.evaluate(
        on_floor_plan(
            "const s = card.shadowRoot.querySelector('select.what'); s.value = '';"
            " s.dispatchEvent(new Event('change')); return true;"
        )
    )
