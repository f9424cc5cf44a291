"""Restart policy: whether a supervised process that exited is started again, and when.

The supervisor asks `decide_restart` each time a service's process exits. A process that
ran for at least `stable_after_s` is considered to have been healthy, so its crash starts a
fresh backoff sequence; one that keeps dying quickly waits longer each time (exponential
with jitter, from edgefleet.core.backoff), up to `max_delay_s`.

>>> import random
>>> policy = RestartPolicy(base_delay_s=1.0, max_delay_s=8.0, stable_after_s=30.0)
>>> d = decide_restart(policy, failures=3, ran_for_s=2.0, exit_code=1, rng=random.Random(0))
>>> d.restart, d.failures, 4.0 <= d.delay_s <= 8.0
(True, 4, True)
>>> decide_restart(policy, failures=3, ran_for_s=45.0, exit_code=-9,
...                rng=random.Random(0)).failures   # ran long enough: the count starts over
1
"""

from __future__ import annotations

import random
import signal
from dataclasses import dataclass
from enum import StrEnum

from edgefleet.core.backoff import backoff_delay_s


class RestartMode(StrEnum):
    ALWAYS = "always"  # a long-running service: any exit is restarted
    ON_FAILURE = "on-failure"  # exit code 0 means the job is done
    NEVER = "never"


@dataclass(frozen=True)
class RestartPolicy:
    mode: RestartMode = RestartMode.ALWAYS
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    stable_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("restart delays need 0 <= base_delay_s <= max_delay_s")
        if self.stable_after_s < 0:
            raise ValueError("stable_after_s must not be negative")


@dataclass(frozen=True)
class RestartDecision:
    restart: bool
    delay_s: float
    failures: int  # consecutive quick failures, including this one
    reason: str


def describe_exit(exit_code: int) -> str:
    """`exit code 3`, or `signal SIGKILL` for a negative code (Python's convention).

    >>> describe_exit(-9), describe_exit(0)
    ('signal SIGKILL', 'exit code 0')
    """
    if exit_code < 0:
        try:
            return f"signal {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"signal {-exit_code}"
    return f"exit code {exit_code}"


def decide_restart(
    policy: RestartPolicy,
    *,
    failures: int,
    ran_for_s: float,
    exit_code: int,
    rng: random.Random,
) -> RestartDecision:
    """What to do after a process exited with `exit_code` having run for `ran_for_s`.

    `failures` is the count of consecutive quick exits before this one (from the previous
    decision, 0 at first start).
    """
    how = f"exited with {describe_exit(exit_code)} after {ran_for_s:.1f} s"
    if policy.mode is RestartMode.NEVER or (
        policy.mode is RestartMode.ON_FAILURE and exit_code == 0
    ):
        return RestartDecision(False, 0.0, failures, f"{how}; restart policy {policy.mode}")
    attempt = 0 if ran_for_s >= policy.stable_after_s else failures
    delay_s = backoff_delay_s(attempt, policy.base_delay_s, policy.max_delay_s, rng)
    return RestartDecision(
        True, delay_s, attempt + 1, f"{how}; restart {attempt + 1} in {delay_s:.1f} s"
    )
