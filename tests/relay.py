"""A TCP relay on a thread of its own, between a client and the control plane: counts the
connections made through it and the bytes each way, and keeps what went upstream, so a test
or a benchmark can see exactly what a device put on the wire. `blackholed` makes it a link
that died without a reset: bytes are swallowed, connections accepted and never answered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from abc import ABC, abstractmethod
from typing import Self


class LoopbackListener(ABC):
    """A listener on a loopback port, with an event loop on a thread of its own, in front
    of the server at `server_url`; subclasses say what to do with each connection
    (`_accept`) and register the streams to close in `_writers`."""

    def __init__(self, server_url: str) -> None:
        self._host, port = server_url.removeprefix("http://").rsplit(":", 1)
        self._port = int(port)
        self.url = ""
        self._writers: list[asyncio.StreamWriter] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _listen(self) -> None:
        self._listener = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._listener.sockets[0].getsockname()[1]}"

    async def _close(self) -> None:
        self._listener.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in self._writers), return_exceptions=True)
        await self._listener.wait_closed()

    @abstractmethod
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection from the client."""


class Relay(LoopbackListener):
    """A TCP relay in front of the server, on a thread of its own: counts the connections
    made through it and keeps every byte sent upstream."""

    def __init__(self, server_url: str) -> None:
        super().__init__(server_url)
        self.connections = 0
        self.streams: list[bytearray] = []  # what went upstream, one per connection
        self.downstream_bytes = 0
        self.blackholed = False  # set and cleared from any thread

    @property
    def upstream_bytes(self) -> int:
        return sum(len(stream) for stream in self.streams)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.blackholed:
            self._writers.append(writer)
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(self._host, self._port)
        self._writers += [writer, upstream_writer]
        stream = bytearray()
        self.streams.append(stream)
        await asyncio.gather(self._pipe(reader, upstream_writer, stream),
                             self._pipe(upstream_reader, writer, None))  # fmt: skip

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep: bytearray | None
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if self.blackholed:
                    continue
                if keep is not None:
                    keep += data
                else:
                    self.downstream_bytes += len(data)
                writer.write(data)
                await writer.drain()
        writer.close()

    def requests(self) -> list[tuple[str, str, bytes]]:
        """(method, path without query, body) of every whole request relayed so far, each
        connection's in order."""
        found = []
        for stream in self.streams:
            data, at = bytes(stream), 0
            while (end := data.find(b"\r\n\r\n", at)) != -1:
                line, *fields = data[at:end].decode("latin-1").split("\r\n")
                method, target, _ = line.split(" ")
                length = next((int(f.split(":", 1)[1]) for f in fields
                               if f.lower().startswith("content-length:")), 0)  # fmt: skip
                if end + 4 + length > len(data):
                    break  # the rest has not arrived yet
                found.append((method, target.split("?")[0], data[end + 4 : end + 4 + length]))
                at = end + 4 + length
        return found

    def report_bodies(self) -> list[dict[str, object]]:
        """The JSON bodies of the heartbeats relayed so far."""
        return [json.loads(body) for method, path, body in self.requests()
                if method == "POST" and path.endswith("/report")]  # fmt: skip
