"""A loopback TCP proxy that adds latency and counts round trips and bytes.

Every chunk is held for `one_way` seconds in each direction, in arrival order
(one FIFO per direction), so a request/response exchange costs 2 x one_way more
than on bare loopback. Connecting costs one round trip too: the upstream
connection is opened one_way after the client's, and the greeting comes back
one_way later.

Round trips are counted where the client has to wait for the server: one per
connection (for the greeting) and one each time the client sends after having
received data (or for the first time). Pipelined writes count once.
"""

import asyncio
import threading
from dataclasses import dataclass, replace


@dataclass
class Counters:
    """What passed through the proxy since the last reset."""

    connections: int = 0
    round_trips: int = 0
    bytes_up: int = 0
    bytes_down: int = 0

    @property
    def bytes_total(self) -> int:
        """Bytes in both directions."""
        return self.bytes_up + self.bytes_down


class Exchange:
    """Turn-taking of one connection: counts a round trip per client turn."""

    def __init__(self, counters: Counters):
        self.counters = counters
        self.counters.connections += 1
        self.counters.round_trips += 1
        self._client_turn = False

    def up(self, size: int) -> None:
        """Record a chunk from client to server."""
        self.counters.bytes_up += size
        if not self._client_turn:
            self.counters.round_trips += 1
            self._client_turn = True

    def down(self, size: int) -> None:
        """Record a chunk from server to client."""
        self.counters.bytes_down += size
        self._client_turn = False


class LatencyProxy:
    """Forward 127.0.0.1:<port> to target with one_way seconds each way."""

    def __init__(self, target_host: str, target_port: int, one_way: float = 0.010):
        self.target = (target_host, target_port)
        self.one_way = one_way
        self.counters = Counters()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> "LatencyProxy":
        """Listen on a free loopback port in a background thread."""
        self._thread.start()
        self._server = self._call(
            asyncio.start_server(self._handle, "127.0.0.1", 0, reuse_address=True)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop listening, drop open connections and stop the loop's thread."""
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def reset(self) -> Counters:
        """Return the counters so far and zero them (in place: open connections
        keep counting into the same object)."""
        old = replace(self.counters)
        vars(self.counters).update(vars(Counters()))
        return old

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _handle(self, client_reader, client_writer) -> None:
        exchange = Exchange(self.counters)
        await asyncio.sleep(self.one_way)
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            _delayed_pipe(client_reader, server_writer, self.one_way, exchange.up),
            _delayed_pipe(server_reader, client_writer, self.one_way, exchange.down),
            return_exceptions=True,
        )


async def _delayed_pipe(reader, writer, delay: float, record) -> None:
    """Copy reader to writer, holding each chunk `delay` seconds, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def pump() -> None:
        try:
            while data := await reader.read(65536):
                record(len(data))
                queue.put_nowait((loop.time() + delay, data))
        finally:
            queue.put_nowait((loop.time() + delay, b""))

    async def drain() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    await asyncio.gather(pump(), drain(), return_exceptions=True)
