"""The control plane's listening socket: connections it accepts get TCP_NODELAY."""

from __future__ import annotations

import asyncio
import socket

from edgefleet.server.main import listening_socket


def test_accepted_connections_do_not_wait_for_delayed_acks() -> None:
    async def accepted_nodelay() -> int:
        sock = listening_socket("127.0.0.1", 0)
        flags: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted = writer.get_extra_info("socket")
            flags.set_result(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            try:
                return await asyncio.wait_for(flags, timeout=10)
            finally:
                writer.close()

    assert asyncio.run(accepted_nodelay()) != 0
