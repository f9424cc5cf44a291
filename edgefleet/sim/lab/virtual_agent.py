"""A modelled agent for the lab: what a device does with the desired state, in simulated time.

    publish(release, token) ─▶ (link up? long poll answers after the one-way latency)
        ─▶ verify metadata ─▶ download (pauses while offline) ─▶ sandbox ─▶ start
        ─▶ health window ─▶ judged by core.install.judge_health on the window's counters
        ─▶ installed, or rolled back locally (the previous service restarted)
        ─▶ report (when the link is up)

It follows the real agent's install path step by step, with each step's duration taken
from the device's class (`sandbox_s`, `start_s`), the release (size, health window) and the
link; the health verdict is the agent's own pure function. A crash or node death stops
everything in flight (events of an older `epoch` are ignored); a restart resumes the
assignment it last saw, and reports again.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from edgefleet.core.rollouts.rollout import InstallReport
from edgefleet.core.updates.install import (
    FAILED_PROBES_TO_GIVE_UP,
    HealthSample,
    HealthVerdictState,
    judge_health,
)
from edgefleet.core.updates.service_manifest import HealthCriteria
from edgefleet.sim.lab.fleet_model import LabDevice
from edgefleet.sim.lab.link import LinkSchedule
from edgefleet.sim.lab.scheduler import EventScheduler
from edgefleet.sim.lab.telemetry_model import Serving, noisy_count
from edgefleet.sim.model_behaviour import BadModel, poisson
from edgefleet.sim.profile import ReleaseFacts

DEFAULT_BANDWIDTH_KBPS = 100_000.0
METADATA_ROUND_TRIPS = 4  # TUF timestamp, snapshot, targets, plus the desired state


@dataclass(frozen=True)
class Assignment:
    release: str | None
    token: datetime  # the rollout record's assigned_at: which assignment a report is about


@dataclass
class Exposure:
    """How much a device served a bad release."""

    device_s: float = 0.0
    requests: float = 0.0
    errors: float = 0.0


class VirtualAgent:
    def __init__(
        self,
        device: LabDevice,
        link: LinkSchedule,
        scheduler: EventScheduler,
        *,
        release_facts: Callable[[str], ReleaseFacts],
        bad_model: Callable[[str | None], BadModel | None],
        on_report: Callable[[str, Assignment, InstallReport], None],
        on_live: Callable[[VirtualAgent], None],
        rng: random.Random,
    ) -> None:
        self.device = device
        self.link = link
        self._scheduler = scheduler
        self._release_facts = release_facts
        self._bad_model = bad_model
        self._on_report = on_report
        self._on_live = on_live
        self._rng = rng
        self.live_release = device.current_release
        self.live_since_s: float | None = None
        self.desired: Assignment | None = None
        self.done: tuple[Assignment, InstallReport] | None = None
        self.running = device.online
        self.epoch = 0
        self.exposure = Exposure()
        self._bad_since_s: float | None = None
        self._bad_serving: BadModel | None = None
        self.install_reasons: list[str] = []

    # What the control plane does.

    def publish(self, assignment: Assignment) -> None:
        self.desired = assignment
        if self.running:
            self._learn_at(self._scheduler.now_s)

    def _learn_at(self, t: float) -> None:
        when = self.link.next_online(t)
        if math.isinf(when):
            return
        self._scheduler.at(when + self.link.one_way_s(), self._learn, self.epoch)

    # The install, step by step.

    def _learn(self, epoch: int) -> None:
        assignment = self.desired
        if epoch != self.epoch or assignment is None or not self.running:
            return
        if self.done is not None and self.done[0] == assignment:
            self._report(*self.done)
            return
        t = self._scheduler.now_s
        if assignment.release is None:
            self._go_live(None, t)
            self._finish(assignment, InstallReport.INSTALLED)
            return
        facts = self._release_facts(assignment.release)
        for _ in range(METADATA_ROUND_TRIPS):
            t += 2 * self.link.one_way_s()
        bandwidth = self.link.conditions.bandwidth_kbps or DEFAULT_BANDWIDTH_KBPS
        t = self.link.advance_online(t, facts.size_mb * 8_000 / bandwidth)
        if math.isinf(t):
            return
        behaviour = self.device.behaviour
        window_starts = t + behaviour.sandbox_s + behaviour.start_s
        self._scheduler.at(window_starts, self._window_opens, epoch, assignment)
        self._scheduler.at(window_starts + facts.health_window_s, self._judge, epoch, assignment,
                           window_starts)  # fmt: skip

    def _window_opens(self, epoch: int, assignment: Assignment) -> None:
        bad = self._bad_model(assignment.release)
        if epoch == self.epoch and bad is not None:
            self._start_bad(self._scheduler.now_s, bad)

    def _judge(self, epoch: int, assignment: Assignment, window_starts: float) -> None:
        if epoch != self.epoch or assignment != self.desired:
            return
        assert assignment.release is not None
        facts = self._release_facts(assignment.release)
        serving = self.serving(assignment.release)
        window_s = facts.health_window_s
        requests = poisson(self._rng, serving.behaviour.requests_per_s * window_s)
        errors = noisy_count(self._rng, requests, serving.error_percent() / 100)
        samples = [HealthSample(0.0, True, "HTTP 200", 0, 0),
                   HealthSample(window_s, True, "HTTP 200", requests, errors)]  # fmt: skip
        bad = self._bad_model(assignment.release)
        if bad is not None and self._rng.random() < bad.self_test_failure():
            # The service's health check runs the model on a fixed input (the example
            # inference server's self-test); when that input is one the model gets wrong,
            # every probe fails, whatever the traffic.
            samples = [HealthSample(float(i), False, "HTTP 503: self-test failed", 0, 0)
                       for i in range(FAILED_PROBES_TO_GIVE_UP)]  # fmt: skip
        criteria = HealthCriteria(http_path="/healthz", window_s=window_s,
                                  max_error_rate=facts.max_error_percent / 100,
                                  min_requests=facts.min_requests)  # fmt: skip
        verdict = judge_health(samples, criteria, 0.0, window_s)
        now = self._scheduler.now_s
        if verdict.state is HealthVerdictState.HEALTHY:
            self._go_live(assignment.release, window_starts)
            self._finish(assignment, InstallReport.INSTALLED)
        else:
            self._stop_bad(now)
            self.install_reasons.append(verdict.reason)
            # The local rollback restarts the previous release's service, then reports.
            self._scheduler.after(self.device.behaviour.start_s, self._rolled_back, epoch,
                                  assignment)  # fmt: skip

    def _rolled_back(self, epoch: int, assignment: Assignment) -> None:
        if epoch == self.epoch:
            self._finish(assignment, InstallReport.FAILED)

    def _go_live(self, release: str | None, since_s: float) -> None:
        now = self._scheduler.now_s
        bad = self._bad_model(release)
        if bad is None:
            self._stop_bad(now)
        else:
            self._start_bad(since_s, bad)
        self.live_release, self.live_since_s = release, since_s
        self._on_live(self)

    def _finish(self, assignment: Assignment, outcome: InstallReport) -> None:
        self.done = (assignment, outcome)
        self._report(assignment, outcome)

    def _report(self, assignment: Assignment, outcome: InstallReport) -> None:
        when = self.link.next_online(self._scheduler.now_s)
        if not math.isinf(when):
            self._scheduler.at(when + self.link.one_way_s(), self._deliver, self.epoch,
                               assignment, outcome)  # fmt: skip

    def _deliver(self, epoch: int, assignment: Assignment, outcome: InstallReport) -> None:
        if epoch == self.epoch and self.running:
            self._on_report(self.device.id, assignment, outcome)

    # Exposure to a bad model.

    def serving(self, release: str | None = None) -> Serving:
        release = self.live_release if release is None else release
        return Serving(self.device.behaviour, self.device.speed_factor, self._bad_model(release))

    def _start_bad(self, t: float, bad: BadModel) -> None:
        if self._bad_since_s is None:
            self._bad_since_s, self._bad_serving = t, bad

    def _stop_bad(self, t: float) -> None:
        if self._bad_since_s is None or self._bad_serving is None:
            return
        seconds = max(0.0, t - self._bad_since_s)
        rate = self.device.behaviour.requests_per_s
        error_percent = self._bad_serving.error_percent_overall(self.device.behaviour.error_percent)
        self._bad_since_s = self._bad_serving = None
        self.exposure.device_s += seconds
        self.exposure.requests += rate * seconds
        self.exposure.errors += rate * seconds * error_percent / 100

    def close_exposure(self) -> None:
        """Account for a bad model still serving at the end of the rehearsal."""
        self._stop_bad(self._scheduler.now_s)

    # Faults.

    def go_down(self) -> None:
        """The agent (or the node) stops: everything in flight is abandoned."""
        if self.running:
            self.running = False
            self.epoch += 1
            self._stop_bad(self._scheduler.now_s)

    def come_back(self) -> None:
        """The agent restarts from its data directory: resume, report."""
        if self.running:
            return
        self.running = True
        self.epoch += 1
        bad = self._bad_model(self.live_release)
        if bad is not None:
            self._start_bad(self._scheduler.now_s, bad)
        if self.desired is not None:
            self._learn_at(self._scheduler.now_s)
