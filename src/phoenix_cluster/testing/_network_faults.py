"""LocalCluster's network faults: partitions, isolation, one-way cuts and flapping links.

:class:`NetworkFaults` is the part of :class:`~._local_cluster.LocalCluster` that cuts
the network between its members: it turns groups of members into sets of loopback
hosts and those into :class:`~._firewall.Firewall` rules, checks first that faults can
be injected here (Linux, ``iptables``, privilege, a loopback address per node), and
removes the rules again on :meth:`~NetworkFaults.heal`. Which host a member is on is
the cluster's to say (``_hosts_of``, ``_all_hosts``).
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import os
import shlex
from collections.abc import Sequence
from typing import Any, TypeAlias

from .._node import Node
from ._firewall import Firewall

__all__ = ["Member", "NetworkFaults"]

_log = logging.getLogger("phoenix_cluster.testing")

Member: TypeAlias = "int | str | Node"
"""Who a fault applies to: a node index, a :class:`~phoenix_cluster.Node` made by
:meth:`LocalCluster.client`, a node or client name, ``"client"`` (every client of the
cluster) or an IPv4 address."""


class NetworkFaults:
    """Network faults between the members of a cluster (a base of ``LocalCluster``)."""

    tag: str
    _firewall: Firewall
    _prefix: str | None
    _closed: bool
    _atexit_registered: bool
    _flaps: set[asyncio.Task[Any]]

    def _hosts_of(self, member: Member) -> list[str]:
        raise NotImplementedError

    def _all_hosts(self) -> set[str]:
        raise NotImplementedError

    @classmethod
    def network_faults_unavailable(cls) -> str | None:
        """Why ``partition``/``isolate``/``flap`` cannot work here, or ``None``.

        Tests call it first and ``pytest.skip`` with the reason (Phoenix's own suite
        turns such a skip into a failure under ``CI``).
        """
        return Firewall.unavailable()

    def partition(self, *groups: Sequence[Member]) -> None:
        """Drop every packet (TCP and UDP, both directions) between different groups.

        Members in no group keep talking to everyone: ``partition([0], [1])`` breaks
        only the link between nodes 0 and 1. With a single group, the other group is
        every other node and client. Partitions add up until :meth:`heal`.

        Raises:
            RuntimeError: not root, no ``iptables``, or the nodes share an address
                (the message says which); tests ``pytest.skip`` on it.
            ValueError: a member is unknown or in two groups.
        """
        self._check_faults()
        sides = [self._side(group) for group in groups]
        if not sides:
            raise ValueError("partition() needs at least one group")
        if len(sides) == 1:
            sides.append(self._all_hosts() - sides[0])
        for a, b in itertools.combinations(sides, 2):
            if not a or not b:
                raise ValueError("every side of a partition needs a member")
            if a & b:
                raise ValueError(f"{sorted(a & b)} cannot be on two sides of a partition")
        specs = []
        for a, b in itertools.combinations(sides, 2):
            specs += self._between(a, b)
        self._firewall.insert(specs)
        _log.info("cluster %s partitioned: %s", self.tag,
                  " | ".join(",".join(sorted(s)) for s in sides))

    def isolate(self, member: Member) -> None:
        """Drop every packet to and from ``member`` (a node index or a client), from
        anyone: the cable is pulled.

        Raises:
            RuntimeError, ValueError: as :meth:`partition`.
        """
        self._check_faults()
        hosts = self._side([member])
        specs = []
        for h in sorted(hosts):
            specs += [self._firewall.drop(h, h, negate="d"),
                      self._firewall.drop(h, h, negate="s")]
        self._firewall.insert(specs)
        _log.info("cluster %s isolated %s", self.tag, ",".join(sorted(hosts)))

    def cut_one_way(self, source: Sequence[Member] | Member,
                    destination: Sequence[Member] | Member) -> None:
        """Drop every packet (TCP and UDP) from ``source`` to ``destination``; the other
        direction keeps working: asymmetric loss. Gossip sees it as one-way (pings one
        way arrive, their acks never do); a TCP connection between the two breaks both
        ways (its acknowledgements are lost). Cuts add up until :meth:`heal`.

        Raises:
            RuntimeError, ValueError: as :meth:`partition`.
        """
        self._check_faults()
        sources = self._side(_as_group(source))
        destinations = self._side(_as_group(destination))
        if not sources or not destinations or sources & destinations:
            raise ValueError("cut_one_way() needs two disjoint, non-empty sides")
        fw = self._firewall
        fw.insert([fw.drop(x, y) for x in sorted(sources) for y in sorted(destinations)])
        _log.info("cluster %s: packets from %s to %s dropped", self.tag,
                  ",".join(sorted(sources)), ",".join(sorted(destinations)))

    def heal(self) -> None:
        """Remove every network fault of this cluster (no-op if none was injected).

        A running :meth:`flap` keeps flapping; cancel it to stop it.
        """
        self._firewall.clear()

    def firewall_rules(self) -> list[str]:
        """This cluster's iptables rules as ``iptables -S`` prints them."""
        if not self._firewall.used:
            return []
        return [shlex.join(rule) for rule in self._firewall.listed()]

    async def flap(self, a: Member | Sequence[Member], b: Member | Sequence[Member], *,
                   period_s: float = 1.0, duration_s: float = 10.0) -> int:
        """Cut the link between ``a`` and ``b`` for half of every ``period_s``, restore
        it for the other half, for ``duration_s``; the link is up again on return (also
        when cancelled, and :meth:`aclose` cancels a running flap).

        Returns:
            How many times the link went down.

        Raises:
            RuntimeError, ValueError: as :meth:`partition`.
        """
        if period_s <= 0 or duration_s <= 0:
            raise ValueError("period_s and duration_s must be positive")
        self._check_faults()
        side_a, side_b = self._side(_as_group(a)), self._side(_as_group(b))
        if side_a & side_b:
            raise ValueError(f"{sorted(side_a & side_b)} cannot be on both ends of a link")
        specs = self._between(side_a, side_b)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration_s
        task = asyncio.current_task()
        if task is not None:
            self._flaps.add(task)
        downs = 0
        try:
            while (left := deadline - loop.time()) > 0:
                self._check_faults()
                self._firewall.insert(specs)
                downs += 1
                try:
                    await asyncio.sleep(min(period_s / 2, left))
                finally:
                    self._firewall.delete(specs)
                if (left := deadline - loop.time()) > 0:
                    await asyncio.sleep(min(period_s / 2, left))
        finally:
            if task is not None:
                self._flaps.discard(task)
        return downs

    def _check_faults(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        reason = self.network_faults_unavailable()
        if reason is None and self._prefix is None:
            reason = ("network faults need a loopback address per node, but only"
                      " 127.0.0.1 can be bound here")
        if reason is not None:
            raise RuntimeError(reason)
        if not self._atexit_registered:
            Firewall.sweep_stale(os.getpid())
            atexit.register(self._firewall.clear)
            self._atexit_registered = True

    def _between(self, a: set[str], b: set[str]) -> list[list[str]]:
        fw = self._firewall
        return [spec for x in sorted(a) for y in sorted(b)
                for spec in (fw.drop(x, y), fw.drop(y, x))]

    def _side(self, group: Sequence[Member]) -> set[str]:
        hosts: set[str] = set()
        for member in _as_group(group):
            hosts.update(self._hosts_of(member))
        return hosts


def _as_group(group: Member | Sequence[Member]) -> Sequence[Member]:
    if isinstance(group, int | str | Node):
        return [group]
    return group
