"""Inference traffic for a fleet's release services: a load generator for demos, tests and
rehearsals on one host.

Every few rounds it asks the control plane which devices matching a selector run an
installed release and on which port (`release_status.active.port`), then sends each a few
`/infer` requests with inputs drawn from N(0, 1). Connection errors are expected while a
device switches slots and simply skip that device for the round.

    with ReleaseTraffic(client_factory, "kind=camera") as traffic:
        ...  # traffic.sent counts requests answered (any status)
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from types import TracebackType

import httpx

from edgefleet.client import FleetClient

REFRESH_EVERY_ROUNDS = 5


class ReleaseTraffic:
    def __init__(
        self,
        client: Callable[[], FleetClient],
        selector: str,
        *,
        input_size: int = 4,
        requests_per_round: int = 4,
        round_interval_s: float = 0.1,
        seed: int = 7,
    ) -> None:
        self._client = client
        self._selector = selector
        self._input_size = input_size
        self._per_round = requests_per_round
        self._interval_s = round_interval_s
        self._seed = seed
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="release-traffic")

    def serving_ports(self) -> list[int]:
        with self._client() as client:
            ports = []
            for device in client.list_devices(self._selector):
                status = device.get("release_status") or {}
                active = status.get("active") or {}
                if status.get("state") == "installed" and active.get("port"):
                    ports.append(int(active["port"]))
            return ports

    def _run(self) -> None:
        rng = random.Random(self._seed)
        ports: list[int] = []
        with httpx.Client(timeout=2, trust_env=False) as http:
            round_ = 0
            while not self._stop.is_set():
                if round_ % REFRESH_EVERY_ROUNDS == 0:
                    try:
                        ports = self.serving_ports()
                    except Exception:  # the control plane may be restarting
                        ports = []
                for port in ports:
                    for _ in range(self._per_round):
                        row = [rng.gauss(0, 1) for _ in range(self._input_size)]
                        try:
                            http.post(f"http://127.0.0.1:{port}/infer", json={"input": [row]})
                            self.sent += 1
                        except httpx.HTTPError:
                            break
                round_ += 1
                self._stop.wait(self._interval_s)

    def __enter__(self) -> ReleaseTraffic:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
