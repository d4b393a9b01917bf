"""Joining a cluster through seeds, or forming a new one: who may, and why a join fails.

The rule is Akka's first seed node. A member whose seed list names only itself (or no
seed at all, and no discovery) forms a cluster of one at once. A member that is the
*first* entry of a longer seed list tries the other seeds and, when none of them has
answered within ``seed_timeout_s``, forms a cluster of one that the others join later.
Every other node only joins: it never forms a cluster on its own, so nodes started
together (or a node restarted while the network is cut) cannot make two clusters that
each elect themselves the replicas of every key. A node that joins nobody within
``join_timeout_s`` gives up (``phx node`` exits non-zero, saying which seed failed how).

A member that uses discovery and has no static seed behaves like a first seed, with
Akka Cluster Bootstrap's rule for the order discovery lacks: after ``seed_timeout_s``
without joining anyone it forms a cluster of one only if no address discovery found
sorts before its own. Pods of a StatefulSet that discover each other but have not met
yet therefore wait for the lowest one instead of each forming a cluster.

Pure bookkeeping: no I/O, no clock (the node owns the timers and feeds in failures).
"""

from __future__ import annotations

from collections.abc import Iterable

from phoenix_cluster.errors import AuthenticationError, NodeUnavailable, PhoenixError

__all__ = ["JoinPlan"]


class JoinPlan:
    """How one node joins (or forms) its cluster, and what went wrong so far.

    Args:
        seeds: the configured seed addresses, in order (``--seed``).
        own_addresses: the addresses that name this node (its bound address and its
            ``listen`` setting): a seed equal to one of them is this node itself.
        role: ``member`` or ``client`` (a client never forms a cluster).
        discovery: whether a discovery provider finds more seeds.
    """

    __slots__ = ("_by_discovery", "_failures", "first_seed", "forms_at_once", "others")

    def __init__(self, seeds: Iterable[str], own_addresses: Iterable[str], *, role: str,
                 discovery: bool) -> None:
        own = {a for a in own_addresses if a}
        listed = list(dict.fromkeys(seeds))
        self.others: tuple[str, ...] = tuple(s for s in listed if s not in own)
        """The seeds that are other nodes."""
        member = role == "member"
        self.forms_at_once = member and not self.others and not discovery
        """Forms a cluster of one as soon as it starts (its seeds name only itself)."""
        self._by_discovery = member and discovery and not listed
        self.first_seed = member and not self.forms_at_once and (
            (bool(listed) and listed[0] in own) or self._by_discovery)
        """Forms a cluster of one if no other node answers within ``seed_timeout_s``."""
        self._failures: dict[str, str] = {}

    def may_form_alone(self, own_address: str, discovered: Iterable[str]) -> bool:
        """At the seed timeout, without having joined: form a cluster of one now?

        A static first seed always does. A member seeded by discovery does only when no
        other address ``discovered`` sorts before ``own_address`` (the lowest forms, the
        others join it); otherwise it waits another ``seed_timeout_s``.
        """
        if not self.first_seed:
            return False
        if not self._by_discovery:
            return True
        return all(own_address <= a for a in discovered if a != own_address)

    def failed(self, address: str, exc: BaseException) -> str | None:
        """Note that a join attempt through ``address`` failed with ``exc``.

        Returns:
            A one-line explanation when this is news (a first failure of that seed, or a
            different kind of failure than last time); ``None`` when it repeats.
        """
        why = describe_failure(exc).replace(f"cannot reach {address}: ", "")
        previous = self._failures.get(address)
        self._failures[address] = why
        if previous is not None and _kind(previous) == _kind(why):
            return None
        return f"cannot join through seed {address}: {why}"

    def answered(self, address: str) -> None:
        """A join attempt through ``address`` succeeded (its failure is history)."""
        self._failures.pop(address, None)

    def failures(self) -> dict[str, str]:
        """The last failure of every seed that has not answered since, by address."""
        return dict(self._failures)

    def describe(self) -> str:
        """Why the node has not joined, for the line it logs when it gives up."""
        if self._failures:
            return "; ".join(f"seed {a}: {why}" for a, why in sorted(self._failures.items()))
        if self.others:
            return f"no answer from seeds {', '.join(self.others)}"
        return "discovery found no other node"


def describe_failure(exc: BaseException) -> str:
    """What a failed join attempt means, in the words an operator acts on."""
    if isinstance(exc, AuthenticationError):
        return f"wrong cluster secret (cookie): {exc.message}"
    if isinstance(exc, NodeUnavailable | OSError | TimeoutError):
        text = exc.message if isinstance(exc, PhoenixError) else (str(exc) or type(exc).__name__)
        return f"unreachable: {text}"
    if isinstance(exc, PhoenixError):
        return f"{type(exc).__name__}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _kind(why: str) -> str:
    return why.split(":", 1)[0]
