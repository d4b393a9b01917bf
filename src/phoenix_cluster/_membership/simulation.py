"""Many :class:`~.swim.SwimProtocol` instances on one simulated, lossy network.

Used by ``phx bench membership`` for the in-process figures: how many protocol periods
(rounds) a cluster of 10, 100 or 1,000 members needs to converge. The protocols are the
real state machines, unchanged; only the network and the clock are simulated:

- a datagram (a :class:`~.swim.Send`) is lost with probability ``loss``, else delivered
  after a latency drawn uniformly from ``latency_s``; its size is the protocol's own
  (bounded by ``SwimSettings.max_datagram_bytes``, which :attr:`max_datagram_bytes`
  records and :meth:`SimulatedNetwork.run` checks);
- a push-pull exchange (a :class:`~.swim.StartSync`, TCP in a real node) is instantaneous
  and lossless, refused when the peer is not running;
- faults for the whole-system simulator (:mod:`phoenix_cluster.testing.simulation`):
  ``duplicate`` delivers a datagram twice (each copy with its own latency, so copies and
  datagrams overtake each other), :meth:`SimulatedNetwork.partition` loses everything
  between sides and refuses push-pulls across them, :meth:`SimulatedNetwork.pause`
  freezes a member (its timers and the datagrams sent to it wait until it wakes), and
  :meth:`SimulatedNetwork.restart` brings a crashed member back with a higher incarnation;
- ``trace``, when given, receives one line per event (a send, a loss, a delivery, a
  push-pull, a suspicion or death) with the datagram's encoded bytes: the simulator
  hashes them, so two runs compare byte for byte;
- time jumps from one event (a delivery or a protocol deadline) to the next: 100 members
  run a minute of protocol time in about a second, 1,000 members about as fast as real
  time (one Python process runs them all).

Every run is seeded, hence reproducible. Pure: no I/O, no asyncio, no global randomness.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .messages import SEAL_OVERHEAD, GossipMessage, SyncState, Update, encode_sync_state
from .swim import Action, MemberEvent, Send, StartSync, SwimProtocol, SwimSettings

__all__ = [
    "ConvergenceRun",
    "SimulatedNetwork",
    "cold_start",
    "join_spread",
]

_Delivery = tuple[str, str, GossipMessage]  # (to address, from address, message)


class SimulatedNetwork:
    """A lossy, delaying datagram network of SwimProtocols under one simulated clock.

    Args:
        settings: the timers and limits every member runs with.
        seed: seeds the network (loss, latency) and, derived from it, each member's own
            random source.
        loss: probability that one datagram is lost.
        latency_s: one-way datagram latency range, seconds.
    """

    def __init__(self, settings: SwimSettings, *, seed: int = 1, loss: float = 0.0,
                 latency_s: tuple[float, float] = (0.0005, 0.003), duplicate: float = 0.0,
                 trace: Callable[[str, bytes], None] | None = None) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), got {loss}")
        if not 0.0 <= duplicate < 1.0:
            raise ValueError(f"duplicate must be in [0, 1), got {duplicate}")
        self.duplicate = duplicate
        self.trace = trace
        self.paused: dict[str, float] = {}
        """Paused members: address -> the time they wake."""
        self._side: dict[str, int] = {}  # address -> partition side
        self.settings = settings
        self.seed = seed
        self.loss = loss
        self.latency_s = latency_s
        self.now = 0.0
        self.nodes: dict[str, SwimProtocol] = {}  # by address
        self.crashed: set[str] = set()  # addresses
        self.datagrams = 0
        self.lost = 0
        self.duplicated = 0
        self.syncs = 0
        self.datagram_bytes = 0
        self.sync_bytes = 0
        """Push-pull payloads, both ways (TCP in a real node)."""
        self.max_datagram_bytes = 0
        self.events: list[tuple[float, str, MemberEvent]] = []
        """Suspicions and deaths: (time, observer, event)."""
        self._rng = random.Random(seed)
        self._heap: list[tuple[float, int, SwimProtocol | _Delivery]] = []
        self._seq = 0
        self._added = 0

    # ------------------------------------------------------------------ members

    @staticmethod
    def address_of(name: str) -> str:
        return f"{name}:7100"

    def add(self, name: str, *, seeds: Iterable[str] = (), incarnation: int = 1) -> SwimProtocol:
        """Start a member now; with ``seeds`` (addresses) it joins through them."""
        address = self.address_of(name)
        self._added += 1
        proto = SwimProtocol(name, address, incarnation,
                             random=random.Random(self.seed * 1_000_003 + self._added),
                             settings=self.settings, now=self.now)
        self.nodes[address] = proto
        self.crashed.discard(address)
        seeds = list(seeds)
        if seeds:
            self._handle(proto, proto.join(seeds, self.now))
        self._arm(proto)
        return proto

    def add_converged(self, n: int, *, prefix: str = "n") -> list[SwimProtocol]:
        """Start ``n`` members that already know each other and have no news left.

        The state of a cluster that has run for a while: each member merges the full
        member table once (as a push-pull would give it) and then forgets the
        announcements that merge queued, so its piggyback buffer starts empty.
        """
        names = [f"{prefix}{i}" for i in range(n)]
        table = tuple(Update(name, self.address_of(name), 1, "alive") for name in names)
        protos = [self.add(name) for name in names]
        for proto in protos:
            payload = encode_sync_state(SyncState(proto.name, table))
            self._handle(proto, proto.merge_state(payload, self.now))
            # The epidemic of these n announcements is long over in a running cluster.
            proto._piggyback.clear()
            self._arm(proto)
        return protos

    def crash(self, name: str) -> None:
        """Stop a member without a word: it neither sends nor receives from now on."""
        self.crashed.add(self.address_of(name))
        self._note(f"crash {name}")

    def restart(self, name: str, *, seeds: Iterable[str]) -> SwimProtocol:
        """Start a crashed member again, one incarnation up (as a node that restarts
        does: it refutes whatever the cluster last heard of it)."""
        old = self.nodes[self.address_of(name)]
        self._note(f"restart {name}")
        return self.add(name, seeds=seeds, incarnation=old.incarnation + 1)

    def pause(self, name: str, seconds: float) -> None:
        """Freeze a member for ``seconds`` (a stopped process, a long GC pause)."""
        self.paused[self.address_of(name)] = self.now + seconds
        self._note(f"pause {name} {seconds!r}")

    def partition(self, sides: Iterable[Iterable[str]]) -> None:
        """Cut the network between ``sides`` (lists of names); unnamed members form one
        more side."""
        self._side = {self.address_of(name): i + 1
                      for i, side in enumerate(sides) for name in side}
        self._note(f"partition {len(self._side)}")

    def heal(self) -> None:
        """Remove the partition."""
        self._side = {}
        self._note("heal")

    def reachable(self, source: str, target: str) -> bool:
        """Whether the partition lets ``source`` reach ``target`` (addresses)."""
        return self._side.get(source, 0) == self._side.get(target, 0)

    def _note(self, line: str, body: bytes = b"") -> None:
        if self.trace is not None:
            self.trace(f"{self.now!r} {line}", body)

    def live(self) -> list[SwimProtocol]:
        return [p for a, p in self.nodes.items() if a not in self.crashed and not p.leaving]

    # ------------------------------------------------------------------ views

    def full_view(self) -> bool:
        """Every running member sees every running member alive, and nobody else live."""
        live = self.live()
        n = len(live)
        # live_count() is O(1) and counts alive + suspect: a cheap necessary condition.
        if any(p.live_count() != n for p in live):
            return False
        names = [p.name for p in live]
        for p in live:
            for name in names:
                m = p.member(name)
                if m is None or m.status != "alive":
                    return False
        return True

    def all_see(self, subject: str, status: str) -> bool:
        """Every running member other than ``subject`` holds it with ``status``."""
        for p in self.live():
            if p.name == subject:
                continue
            m = p.member(subject)
            if m is None or m.status != status:
                return False
        return True

    # ------------------------------------------------------------------ time

    def run(self, seconds: float) -> None:
        """Advance simulated time by ``seconds``."""
        self._step(self.now + seconds)

    def run_until(self, condition: Callable[[], bool], timeout_s: float, *,
                  check_every_s: float = 0.05) -> float | None:
        """Advance until ``condition()`` holds, checking every ``check_every_s``.

        Returns:
            The simulated seconds it took, or ``None`` if it still failed after
            ``timeout_s``.
        """
        start = self.now
        end = start + timeout_s
        while True:
            if condition():
                return self.now - start
            if self.now >= end:
                return None
            self._step(min(end, self.now + check_every_s))

    def _step(self, limit: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= limit:
            t, _, payload = heapq.heappop(heap)
            self.now = max(self.now, t)
            address = payload.address if isinstance(payload, SwimProtocol) else payload[0]
            wakes = self.paused.get(address)
            if wakes is not None:
                if wakes > self.now:  # frozen: the event waits until it wakes
                    self._push(wakes, payload)
                    continue
                del self.paused[address]
            if isinstance(payload, SwimProtocol):  # a deadline
                proto = payload
                if proto.address in self.crashed or self.nodes.get(proto.address) is not proto:
                    continue
                deadline = proto.next_deadline()
                if deadline is None or deadline > t:
                    continue  # stale entry; the current one is in the heap
                self._handle(proto, proto.tick(self.now))
                self._arm(proto)
            else:  # a datagram
                to, source, message = payload
                dest = self.nodes.get(to)
                if dest is None or to in self.crashed:
                    continue
                if self.trace is not None:
                    self._note(f"deliver {source} {to} {type(message).__name__}")
                self._handle(dest, dest.receive(message, source, self.now))
                self._arm(dest)
        self.now = max(self.now, limit)

    def _arm(self, proto: SwimProtocol) -> None:
        deadline = proto.next_deadline()
        if deadline is not None:
            self._push(max(deadline, self.now), proto)

    def _push(self, t: float, payload: SwimProtocol | _Delivery) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, payload))

    def _handle(self, proto: SwimProtocol, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                size = len(action.body) + SEAL_OVERHEAD
                if size > self.settings.max_datagram_bytes:  # pragma: no cover - a bug
                    raise AssertionError(f"{proto.name} sent a {size}-byte datagram")
                self.max_datagram_bytes = max(self.max_datagram_bytes, size)
                self.datagrams += 1
                self.datagram_bytes += size
                if self.trace is not None:
                    self._note(f"send {proto.address} {action.address}", action.body)
                if (self._rng.random() < self.loss
                        or not self.reachable(proto.address, action.address)):
                    self.lost += 1
                    continue
                # The receiver gets the message object: its encoding was sized above.
                delivery = (action.address, proto.address, action.message)
                self._push(self.now + self._rng.uniform(*self.latency_s), delivery)
                if self.duplicate and self._rng.random() < self.duplicate:
                    self.duplicated += 1
                    self._push(self.now + self._rng.uniform(*self.latency_s), delivery)
            elif isinstance(action, StartSync):
                peer = self.nodes.get(action.address)
                if (peer is None or action.address in self.crashed
                        or action.address in self.paused
                        or not self.reachable(proto.address, action.address)):
                    continue  # connection refused (or timed out, on a frozen peer)
                self.syncs += 1
                self._note(f"sync {proto.address} {action.address}")
                request = proto.local_state()
                reply, peer_actions = peer.handle_sync(request, self.now)
                self.sync_bytes += len(request) + len(reply)
                self._handle(peer, peer_actions)
                self._arm(peer)
                self._handle(proto, proto.merge_state(reply, self.now))
            elif action.kind in ("suspected", "dead"):  # joins are too many to keep
                self.events.append((self.now, proto.name, action))
                self._note(f"{action.kind} {proto.name} {action.member.name}")


# ---------------------------------------------------------------------- experiments


@dataclass(frozen=True, slots=True)
class ConvergenceRun:
    """One simulated convergence.

    Attributes:
        members: cluster size ``n``.
        rounds: protocol periods until converged (simulated seconds over
            ``probe_interval_s``); ``None`` if it did not converge within the limit.
        rounds_per_log2_n: ``rounds / log2(n)``; flat when rounds grow like log n.
        datagrams: datagrams sent during the run (lost ones included).
        lost: datagrams the network dropped.
        syncs: push-pull exchanges.
        max_datagram_bytes: the largest datagram sent, seal included.
        suspicions: suspicion events (any member, any observer).
        false_deaths: ``dead`` events about members that were running.
    """

    members: int
    rounds: float | None
    rounds_per_log2_n: float | None
    datagrams: int
    lost: int
    syncs: int
    max_datagram_bytes: int
    suspicions: int
    false_deaths: int


def _summary(net: SimulatedNetwork, n: int, seconds: float | None) -> ConvergenceRun:
    rounds = None if seconds is None else seconds / net.settings.probe_interval_s
    running = {p.name for p in net.live()}
    return ConvergenceRun(
        members=n,
        rounds=rounds,
        rounds_per_log2_n=None if rounds is None else rounds / math.log2(n),
        datagrams=net.datagrams,
        lost=net.lost,
        syncs=net.syncs,
        max_datagram_bytes=net.max_datagram_bytes,
        suspicions=sum(1 for _, _, e in net.events if e.kind == "suspected"),
        false_deaths=sum(1 for _, _, e in net.events
                         if e.kind == "dead" and e.member.name in running),
    )


def cold_start(n: int, settings: SwimSettings, *, seed: int = 1, loss: float = 0.0,
               max_rounds: float = 400.0) -> ConvergenceRun:
    """``n`` members start at once, all joining through the first; rounds until every
    member sees every member alive (gossip plus push-pull, as in a real node).
    """
    net = SimulatedNetwork(settings, seed=seed, loss=loss)
    first = net.add("n0")
    for i in range(1, n):
        net.add(f"n{i}", seeds=[first.address])
    took = net.run_until(net.full_view, max_rounds * settings.probe_interval_s,
                         check_every_s=settings.probe_interval_s / 10)
    return _summary(net, n, took)


def join_spread(n: int, settings: SwimSettings, *, seed: int = 1, loss: float = 0.0,
                max_rounds: float = 400.0) -> ConvergenceRun:
    """One member joins a converged, quiet cluster of ``n``; rounds until all ``n`` see
    it alive.

    The newcomer's push-pull with one random seed tells that seed; everybody else hears
    it by piggybacked gossip alone: ``settings`` should make the push-pull period longer
    than the run (the caller's choice), so the figure is the epidemic's.
    """
    net = SimulatedNetwork(settings, seed=seed, loss=loss)
    net.add_converged(n)
    # Let the members' first probes spread over a period, as in a running cluster.
    net.run(settings.probe_interval_s)
    seed_name = f"n{random.Random(seed).randrange(n)}"
    net.datagrams = net.lost = net.syncs = 0
    net.add("newcomer", seeds=[net.address_of(seed_name)])
    took = net.run_until(lambda: net.all_see("newcomer", "alive"),
                         max_rounds * settings.probe_interval_s,
                         check_every_s=settings.probe_interval_s / 10)
    return _summary(net, n, took)
