"""An HTTP proxy in front of a real control plane that can rewrite its answers: a control
plane that lies, for tests of what operators' tools accept from it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

Forgery = Callable[[bytes], bytes]
_FORWARDED = ("authorization", "content-type", "user-agent")


class ForgingProxy:
    """Relays every request to `upstream`; the 200 answer to a request whose path ends with
    a key of `forgeries` is rewritten by its function. `requests` keeps (method, path)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.forgeries: dict[str, Forgery] = {}
        self.requests: list[tuple[str, str]] = []
        self.url = ""

    def __enter__(self) -> ForgingProxy:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                path = self.path.split("?")[0]
                proxy.requests.append((self.command, path))
                headers = {k: v for k, v in self.headers.items() if k.lower() in _FORWARDED}
                answer = httpx.request(self.command, proxy.upstream + self.path,
                                       headers=headers, content=body, timeout=60)
                content = answer.content
                forge = next((f for suffix, f in proxy.forgeries.items()
                              if path.endswith(suffix)), None)  # fmt: skip
                if forge is not None and answer.status_code == 200:
                    content = forge(content)
                self.send_response(answer.status_code)
                self.send_header("content-type",
                                 answer.headers.get("content-type", "application/json"))
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = relay

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
