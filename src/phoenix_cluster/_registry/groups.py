"""``node.groups``: process groups of agents, cluster-wide (the seed's ``:pg``).

Where membership lives: each node keeps the joins made through it, and only those. A
``members(group)`` query asks every node it sees (members and listening clients) for its
joins and returns the union. So:

- a ``join`` is visible to every query that starts after it returns (the joining node
  answers for it), with no replication and no gossip;
- when a node dies or leaves, its joins go with it: queries stop asking it as soon as
  this node's membership view says it is dead or left, and a node that does not answer
  within ``fanout_timeout_s`` is left out of the answer;
- a query costs one round trip per node, in parallel: fine for tens of nodes, not meant
  for a thousand (a replicated view would trade that for staleness).

An agent is virtual, so a member is a reference, valid wherever the agent runs; the
group entry belongs to the node that made the ``join``.
"""

from __future__ import annotations

import asyncio
import logging

from .._agents.ref import AgentRef
from ..errors import AgentNotFound, PhoenixError, ProtocolError
from .cluster import UNREACHABLE, ClusterLink
from .entries import check_name
from .holdings import RefFactory
from .messages import GroupReply, GroupRequest, decode, encode
from .settings import RegistrySettings

__all__ = ["Groups"]

_log = logging.getLogger("phoenix_cluster.groups")


class Groups:
    """Process groups: ``node.groups`` (see the module docstring for the guarantees)."""

    def __init__(self, link: ClusterLink, *, refs: RefFactory,
                 settings: RegistrySettings) -> None:
        self._link = link
        self._refs = refs
        self.settings = settings
        # group -> (kind, key) of the agents joined through this node (insertion order)
        self._local: dict[str, dict[tuple[str, str], None]] = {}

    async def join(self, group: str, ref: AgentRef) -> None:
        """Add the agent ``ref`` to ``group`` (idempotent). The membership lasts until
        :meth:`leave`, or until this node stops or dies."""
        check_name(group, "group name")
        if not isinstance(ref, AgentRef):
            raise TypeError(f"group members are agent references, got {type(ref).__name__}")
        self._local.setdefault(group, {})[(ref.kind, ref.key)] = None

    async def leave(self, group: str, ref: AgentRef) -> bool:
        """Remove ``ref`` from ``group`` if it joined through this node; returns whether
        it had."""
        check_name(group, "group name")
        members = self._local.get(group)
        member = (ref.kind, ref.key)
        if members is None or member not in members:
            return False
        del members[member]
        if not members:
            del self._local[group]
        return True

    def local_members(self, group: str) -> list[AgentRef]:
        """The members that joined ``group`` through this node."""
        return [self._refs(kind, key) for kind, key in self._local.get(group, ())]

    def local_groups(self) -> list[str]:
        """The groups with a member joined through this node, sorted."""
        return sorted(self._local)

    async def members(self, group: str) -> list[AgentRef]:
        """Every member of ``group`` on every node that answers, sorted by kind and key.

        Raises:
            AgentNotFound: a member's kind is not imported on this node.
        """
        check_name(group, "group name")
        found: set[tuple[str, str]] = set(self._local.get(group, ()))
        payload = encode(GroupRequest(group))

        async def ask(node: str) -> None:
            try:
                raw = await self._link.call(node, "groups", "members", payload,
                                            self.settings.fanout_timeout_s)
            except UNREACHABLE as exc:
                _log.debug("members(%r): %s did not answer: %s", group, node, exc.message)
                return
            found.update((kind, key) for kind, key in decode(GroupReply, raw).members)

        if self._link.clustered:
            await asyncio.gather(*(ask(node) for node in self._link.peers()))
        return [self._refs(kind, key) for kind, key in sorted(found)]

    async def handle(self, method: str, payload: bytes) -> bytes:
        """The ``$groups`` node service.

        Raises:
            AgentNotFound: unknown method.
            ProtocolError: malformed payload.
        """
        if method != "members":
            raise AgentNotFound(f"node {self._link.self_name} has no groups method "
                                f"{method!r} (methods: members)")
        try:
            group = check_name(decode(GroupRequest, payload).group, "group name")
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"$groups.members: {exc}") from None
        except PhoenixError as exc:
            _log.warning("$groups.%s: %s", method, exc.message)
            raise
        return encode(GroupReply(list(self._local.get(group, ()))))

    def __repr__(self) -> str:
        return f"<Groups {self._link.self_name} [{len(self._local)} local groups]>"
