"""`lab rehearse --fleet-from URL` sends the configured token only to the server it belongs
to: a URL given on the command line (a typo, or a link someone sent) never gets it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.cli_runner import run_cli

SECRET = "efa_the-operators-own-token-0123456789"


@pytest.fixture
def stranger() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server that records the Authorization header of every request."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("authorization", ""))
            self.send_response(401)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_the_configured_token_never_goes_to_another_url(
    stranger: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, seen = stranger
    rollout = tmp_path / "rollout.yaml"
    rollout.write_text("kind: Rollout\nmetadata: {name: r}\nspec:\n  release: vision@1.0.0\n"
                       "  target: 'region=eu'\n")  # fmt: skip
    env = {"EDGEFLEET_SERVER": "http://127.0.0.1:9", "EDGEFLEET_TOKEN": SECRET}
    result = run_cli("lab", "rehearse", "--fleet-from", url, "-f", str(rollout), env=env)
    assert result.code != 0 and "Traceback" not in result.stderr
    assert seen, "the CLI did ask the --fleet-from server"
    assert all(SECRET not in header for header in seen)
    # Given for that server explicitly, the token is sent.
    run_cli("lab", "rehearse", "--fleet-from", url, "--token", SECRET, "-f", str(rollout),
            env=env)  # fmt: skip
    assert any(SECRET in header for header in seen)
