"""Placement policies: choose the member that hosts a new agent.

``placement="hash"`` agents live at their home (the partition primary) and never come
here. The other policies run on the home when an agent without a pin gets its first
message; they see one :class:`NodeLoad` per hosting member.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from ..errors import ConfigError

__all__ = [
    "POLICY_NAMES",
    "NodeLoad",
    "Policy",
    "Scored",
    "choose_host",
    "check_policy",
    "policy_name",
]

POLICY_NAMES = ("hash", "local", "least_loaded", "scored")

LAG_CEILING_S = 0.1
"""Event-loop lag at which a node's ``resources`` score reaches 0."""


class NodeLoad(msgspec.Struct, frozen=True):
    """What a member reports about its load (``$placement.load``).

    Attributes:
        name: the member.
        active_agents: activations it holds now.
        message_rate: messages handled per second, recently.
        loop_lag_s: its event loop's recent lag (a measure of spare CPU).
        rtt_s: round trip from the asking node (filled in by the asker).
        kinds: the agent kinds it hosts (whose code it imported); ``None`` from a node
            too old to say, taken to host every kind.
        app_version: the application version it runs (``--app-version``).
    """

    name: str
    active_agents: int
    message_rate: float = 0.0
    loop_lag_s: float = 0.0
    rtt_s: float = 0.0
    kinds: tuple[str, ...] | None = None
    app_version: str = ""

    def hosts(self, kind: str) -> bool:
        """Whether this member can run agents of ``kind``."""
        return self.kinds is None or kind in self.kinds


@dataclass(frozen=True)
class Scored:
    """The seed's weighted node score: the member with the highest score hosts the agent.

    Each factor is normalised to [0, 1] (see ``docs/design/migration.md``). ``affinity``
    may be a function ``(key, node_name) -> float`` in [0, 1]; by default the caller's
    node scores 1 and the others 0.
    """

    resources: float = 0.4
    affinity: float = 0.3
    latency: float = 0.2
    load: float = 0.1
    affinity_fn: Callable[[str, str], float] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("resources", "affinity", "latency", "load"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"Scored: weight {name} must be a number >= 0, got {value!r}",
                                  key=name)
        if self.resources + self.affinity + self.latency + self.load <= 0:
            raise ConfigError("Scored: at least one weight must be > 0", key="weights")

    def score(self, node: NodeLoad, *, key: str, caller: str | None,
              max_active: int) -> float:
        resources = max(0.0, 1.0 - node.loop_lag_s / LAG_CEILING_S)
        if self.affinity_fn is not None:
            affinity = min(1.0, max(0.0, float(self.affinity_fn(key, node.name))))
        else:
            affinity = 1.0 if node.name == caller else 0.0
        latency = 1.0 / (1.0 + node.rtt_s * 1000.0)
        load = 1.0 - node.active_agents / max_active if max_active else 1.0
        return (self.resources * resources + self.affinity * affinity
                + self.latency * latency + self.load * load)


Policy = str | Scored
"""A kind's ``placement=``: a policy name, or a :class:`Scored` instance."""


def check_policy(policy: object, where: str) -> Policy:
    """Validate a kind's ``placement=`` value.

    Raises:
        ConfigError: not a known policy name nor a :class:`Scored`.
    """
    if isinstance(policy, Scored):
        return policy
    if isinstance(policy, str) and policy in POLICY_NAMES:
        return Scored() if policy == "scored" else policy
    raise ConfigError(
        f"{where}: placement must be one of {POLICY_NAMES} or phx.Scored(...), got {policy!r}",
        key="placement",
    )


def policy_name(policy: Policy) -> str:
    return "scored" if isinstance(policy, Scored) else policy


def choose_host(policy: Policy, loads: Sequence[NodeLoad], *, key: str,
                caller: str | None, tie: int) -> str:
    """The member that should host a new agent.

    Args:
        policy: ``local``, ``least_loaded`` or a :class:`Scored`.
        loads: one entry per hosting member (not empty).
        key: the agent's key (for affinity functions).
        caller: the node the first message came from (``local`` prefers it).
        tie: a number that breaks ties deterministically (the key's hash).

    Raises:
        ValueError: ``loads`` is empty, or ``policy`` is ``hash``.
    """
    if not loads:
        raise ValueError("no member to place an agent on")
    ordered = sorted(loads, key=lambda n: n.name)
    if policy == "local":
        for node in ordered:
            if node.name == caller:
                return node.name
        policy = "least_loaded"
    if policy == "least_loaded":
        best = min(ordered, key=lambda n: (n.active_agents, n.message_rate))
        ties = [n for n in ordered
                if (n.active_agents, n.message_rate) == (best.active_agents, best.message_rate)]
        return ties[tie % len(ties)].name
    if isinstance(policy, Scored):
        max_active = max(n.active_agents for n in ordered)
        scores = [(policy.score(n, key=key, caller=caller, max_active=max_active), n.name)
                  for n in ordered]
        top = max(s for s, _ in scores)
        ties_names = [name for s, name in scores if s >= top - 1e-12]
        return ties_names[tie % len(ties_names)]
    raise ValueError(f"policy {policy!r} does not choose hosts (hash agents live at their home)")
