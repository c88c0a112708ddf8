"""A TCP proxy between the edge and the broker that can delay, black-hole, refuse and cut traffic.

It runs its own asyncio loop on a background thread, so a test can drive it from plain code while
the edge runs as a separate process:

    proxy = FaultProxy("127.0.0.1", broker.port); proxy.start()   # edge connects to proxy.port
    proxy.set_delay(50)         # every chunk, both ways, 50 ms later (order kept)
    proxy.stall()               # a partition TCP survives: bytes are held, delivered on heal()
    proxy.blackhole()           # connections stay open, bytes vanish (the session cannot survive)
    proxy.refuse()              # existing connections reset, new ones closed at once
    proxy.cut()                 # reset every open connection once (a flapping link)
    proxy.heal()                # forward normally again
    proxy.stop()

Every mode change takes effect for bytes read after it; counters say what the proxy did.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum


class Mode(StrEnum):
    FORWARD = "forward"
    STALL = "stall"
    BLACKHOLE = "blackhole"
    REFUSE = "refuse"


@dataclass
class ProxyStats:
    accepted: int = 0
    refused: int = 0
    cuts: int = 0
    bytes_up: int = 0  # client -> upstream
    bytes_down: int = 0  # upstream -> client
    dropped_bytes: int = 0
    open: int = 0
    modes: list[tuple[float, str]] = field(default_factory=list)


class _Pair:
    """One proxied connection: two sockets and the pumps between them."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        """Closes both sides with a TCP reset, the way a dead link or a NAT timeout looks."""
        for writer in (self.client, self.upstream):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """Listens on 127.0.0.1:`port` (a free one by default) and forwards to `target_host:target_port`."""

    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = port
        self.mode = Mode.FORWARD
        self.delay_s = 0.0
        self.stats = ProxyStats()
        self._pairs: set[_Pair] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None

    # control, from any thread --------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._thread_main, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        assert self._stopped is not None
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)
        self._loop = None

    def set_delay(self, ms: float) -> None:
        self.delay_s = ms / 1000

    def stall(self) -> None:
        self._set_mode(Mode.STALL)

    def blackhole(self) -> None:
        self._set_mode(Mode.BLACKHOLE)

    def refuse(self) -> None:
        self._set_mode(Mode.REFUSE)
        self._call(self._abort_all)

    def heal(self) -> None:
        self._set_mode(Mode.FORWARD)

    def cut(self) -> None:
        """Resets every open connection now; new connections are accepted as the mode says."""
        self._call(self._abort_all)

    def _set_mode(self, mode: Mode) -> None:
        self.mode = mode
        self.stats.modes.append((time.time(), mode.value))

    def _call(self, fn: object) -> None:
        if self._loop is None:
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn()  # type: ignore[operator]
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)

    # the proxy's own loop ------------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stopped.wait()
        self._server.close()
        self._abort_all()
        await self._server.wait_closed()

    def _abort_all(self) -> None:
        for pair in list(self._pairs):
            pair.abort()
            self.stats.cuts += 1
        self._pairs.clear()
        self.stats.open = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode is Mode.REFUSE:
            self.stats.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, TimeoutError):
            # the broker itself is down: the client sees a closed connection, as it would directly
            self.stats.refused += 1
            writer.transport.abort()
            return
        self.stats.accepted += 1
        pair = _Pair(writer, up_writer)
        self._pairs.add(pair)
        self.stats.open = len(self._pairs)
        pair.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, pair, up=True)),
            asyncio.create_task(self._pump(up_reader, writer, pair, up=False)),
        ]
        await asyncio.gather(*pair.tasks, return_exceptions=True)
        if pair in self._pairs:
            self._pairs.discard(pair)
            self.stats.open = len(self._pairs)
            for w in (writer, up_writer):
                w.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair, *, up: bool
    ) -> None:
        """Copies one direction; delayed chunks go through a queue so their order is kept."""
        queue: deque[tuple[float, bytes]] = deque()
        wake = asyncio.Event()
        sender = asyncio.create_task(self._send_later(queue, wake, writer))
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self.mode is Mode.BLACKHOLE or self.mode is Mode.REFUSE:
                    self.stats.dropped_bytes += len(data)
                    continue
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
                queue.append((time.monotonic() + self.delay_s, data))
                wake.set()
        except (ConnectionError, OSError):
            pass
        finally:
            # the other side ends too: a half-open MQTT session is of no use to anyone
            queue.append((0.0, b""))
            wake.set()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await asyncio.wait_for(sender, 5)
            pair.abort()

    async def _send_later(
        self, queue: deque[tuple[float, bytes]], wake: asyncio.Event, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            while not queue:
                wake.clear()
                await wake.wait()
            due, data = queue.popleft()
            if not data:
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            while self.mode is Mode.STALL:
                # held, as TCP would keep retransmitting until the path heals
                await asyncio.sleep(0.01)
            writer.write(data)
            await writer.drain()
