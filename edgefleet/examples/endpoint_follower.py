"""Following a workload's weighted endpoints: the small client side of traffic shifting.

The control plane publishes where a workload's service runs and how to split traffic
between copies (`GET /v1/services/{name}/endpoints`): during a planned migration the
target's weight goes 10 -> 50 -> 100 while the source's goes down. A client refreshes the
list every `refresh_s` and sends each request to an endpoint picked at random in
proportion to the weights; a copy that cannot be reached is skipped and the list
refreshed at once.

    follower = EndpointFollower("http://cp:8080", "detector", token)
    answer = follower.post("/infer", {"input": [[1, 2, 3, 4]]}).json()

As a command, it sends requests to the example inference workload and prints, every
second, how many each endpoint answered (JSON lines)::

    python -m edgefleet.examples.endpoint_follower --server URL --token T --service NAME \\
        [--requests 100] [--interval 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from typing import Any

import httpx

from edgefleet.core.workloads.endpoints import pick_weighted
from edgefleet.errors import Unavailable


class EndpointFollower:
    def __init__(
        self,
        server_url: str,
        service: str,
        token: str | None,
        *,
        refresh_s: float = 1.0,
        rng: random.Random | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._control = httpx.Client(base_url=server_url.rstrip("/"), headers=headers,
                                     timeout=timeout_s, trust_env=False)  # fmt: skip
        self._data = httpx.Client(timeout=timeout_s, trust_env=False)
        self._service = service
        self._refresh_s = refresh_s
        self._rng = rng or random.Random()
        self._endpoints: list[dict[str, Any]] = []
        self._fetched_at = -float("inf")

    def close(self) -> None:
        self._control.close()
        self._data.close()

    def __enter__(self) -> EndpointFollower:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def endpoints(self, *, refresh: bool = False) -> list[dict[str, Any]]:
        """The published endpoints, at most `refresh_s` old."""
        if refresh or time.monotonic() - self._fetched_at >= self._refresh_s:
            try:
                response = self._control.get(f"/v1/services/{self._service}/endpoints")
                response.raise_for_status()
            except httpx.HTTPError as e:
                if not self._endpoints:
                    raise Unavailable(f"cannot read the endpoints of {self._service}: {e}") \
                        from None  # fmt: skip
            else:
                self._endpoints = list(response.json()["endpoints"])
                self._fetched_at = time.monotonic()
        return self._endpoints

    def pick(self, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
        """One endpoint, chosen in proportion to the weights (`url` not in `exclude`)."""
        usable = [e for e in self.endpoints() if e["url"] not in exclude]
        index = pick_weighted([int(e["weight"]) for e in usable], self._rng.random())
        if index is None:
            raise Unavailable(f"service {self._service} has no endpoint with traffic weight")
        return usable[index]

    def post(self, path: str, payload: Any) -> tuple[dict[str, Any], httpx.Response]:
        """POST to a picked endpoint; on a connection failure, refresh and try another."""
        tried: set[str] = set()
        while True:
            endpoint = self.pick(frozenset(tried))
            try:
                return endpoint, self._data.post(endpoint["url"] + path, json=payload)
            except httpx.TransportError:
                tried.add(endpoint["url"])
                self.endpoints(refresh=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgefleet.examples.endpoint_follower")
    parser.add_argument("--server", default=os.environ.get("EDGEFLEET_SERVER"), required=False)
    parser.add_argument("--token", default=os.environ.get("EDGEFLEET_TOKEN"))
    parser.add_argument("--service", required=True)
    parser.add_argument("--requests", type=int, default=100, help="0: until interrupted")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between requests")
    parser.add_argument("--input", default="[[1, 2, 3, 4]]", help="JSON of the model input")
    args = parser.parse_args(argv)
    if not args.server:
        parser.error("--server (or EDGEFLEET_SERVER) is required")
    payload = {"input": json.loads(args.input)}
    counts: Counter[str] = Counter()
    failures = 0
    last_print = time.monotonic()
    sent = 0
    with EndpointFollower(args.server, args.service, args.token) as follower:
        try:
            while args.requests == 0 or sent < args.requests:
                sent += 1
                try:
                    endpoint, response = follower.post("/infer", payload)
                    counts[f"{endpoint['node'] or endpoint['node_id']}:{endpoint['port']}"] += 1
                    failures += response.status_code >= 400
                except Unavailable:
                    failures += 1
                if time.monotonic() - last_print >= 1.0:
                    print(json.dumps({"answered": dict(counts), "failures": failures}),
                          flush=True)  # fmt: skip
                    last_print = time.monotonic()
                time.sleep(args.interval)
        except KeyboardInterrupt:
            pass
    print(json.dumps({"answered": dict(counts), "failures": failures}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
