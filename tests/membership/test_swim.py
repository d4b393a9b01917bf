"""SwimProtocol on a simulated network: convergence, detection, refutation, restarts, loss.

No asyncio: :class:`SimNet` keeps a heap of datagram deliveries and protocol deadlines,
jumps simulated time from one to the next and feeds the protocols, so a 100-member
cluster runs minutes of protocol time in well under a second of real time. Every run is
seeded, hence deterministic.
"""

from __future__ import annotations

import functools
import heapq
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable

import msgspec
import pytest

from phoenix_cluster._membership.dissemination import retransmit_limit
from phoenix_cluster._membership.messages import (
    SEAL_OVERHEAD,
    Ack,
    Gossip,
    GossipCodec,
    Ping,
    PingReq,
    Update,
    UpdateStatus,
    decode_sync_state,
    gossip_address,
    gossip_key,
    seal,
    unseal,
)
from phoenix_cluster._membership.swim import (
    Action,
    MemberEvent,
    Send,
    StartSync,
    SwimProtocol,
    SwimSettings,
    suspicion_timeouts,
)
from phoenix_cluster.errors import ConfigError, ProtocolError

SETTINGS = SwimSettings()


class SimNet:
    """A lossy, delaying network of SwimProtocols under one simulated clock."""

    def __init__(self, *, seed: int = 1, loss: float = 0.0,
                 settings: SwimSettings = SETTINGS,
                 latency: tuple[float, float] = (0.0005, 0.003)) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.loss = loss
        self.latency = latency
        self.settings = settings
        self.now = 0.0
        self.nodes: dict[str, SwimProtocol] = {}  # by address
        self.by_name: dict[str, SwimProtocol] = {}
        self.crashed: set[str] = set()  # addresses
        self.mute: set[str] = set()  # addresses whose outbound datagrams are lost
        self.cut: set[str] = set()  # addresses cut off: nothing in or out, no sync either
        self.events: list[tuple[float, str, MemberEvent]] = []
        self.sent: list[tuple[str, Send]] = []  # (sender name, datagram)
        self.record_sends = False
        self.max_datagram = 0
        self._heap: list[tuple[float, int, SwimProtocol | tuple[str, str, bytes]]] = []
        self._seq = 0
        self._codec = GossipCodec()

    # -- nodes

    def add(self, name: str, *, incarnation: int = 1000, seeds: Iterable[str] = ()
            ) -> SwimProtocol:
        address = f"{name}:7100"
        index = len(self.by_name) + len(self.crashed)
        proto = SwimProtocol(name, address, incarnation,
                             random=random.Random(self.seed * 100_003 + index),
                             settings=self.settings, now=self.now)
        self.nodes[address] = proto
        self.by_name[name] = proto
        self.crashed.discard(address)
        seeds = list(seeds)
        if seeds:
            self._handle(proto, proto.join(seeds, self.now))
        self._arm(proto)
        return proto

    def cluster(self, n: int, **kw: object) -> list[SwimProtocol]:
        seed = self.add("n0")
        return [seed, *(self.add(f"n{i}", seeds=[seed.address], **kw)  # type: ignore[arg-type]
                        for i in range(1, n))]

    def crash(self, name: str) -> None:
        self.crashed.add(self.by_name[name].address)

    def live(self) -> list[SwimProtocol]:
        return [p for a, p in self.nodes.items() if a not in self.crashed and not p.leaving]

    # -- time

    def run(self, seconds: float) -> None:
        self._step(self.now + seconds)

    def run_until(self, cond: Callable[[], bool], timeout: float, *,
                  check_every: float = 0.05) -> float:
        """Advance until ``cond()`` holds; returns the simulated time it took."""
        start = self.now
        end = start + timeout
        next_check = start
        while True:
            if self.now >= next_check:
                if cond():
                    return self.now - start
                next_check = self.now + check_every
            if self.now >= end:
                raise AssertionError(f"condition still false after {timeout}s simulated")
            self._step(min(end, next_check))

    def _step(self, limit: float) -> None:
        while self._heap and self._heap[0][0] <= limit:
            t, _, payload = heapq.heappop(self._heap)
            self.now = max(self.now, t)
            if isinstance(payload, SwimProtocol):  # a deadline
                ticked = payload
                if (ticked.address in self.crashed
                        or self.nodes.get(ticked.address) is not ticked):
                    continue
                d = ticked.next_deadline()
                if d is None or d > t:
                    continue  # stale entry; the live one is in the heap
                self._handle(ticked, ticked.tick(self.now))
                self._arm(ticked)
            else:  # a datagram
                dest, source, body = payload
                proto = self.nodes.get(dest)
                if proto is None or dest in self.crashed:
                    continue
                self._handle(proto, proto.receive(self._codec.decode(body), source, self.now))
                self._arm(proto)
        self.now = max(self.now, limit)

    def _arm(self, proto: SwimProtocol) -> None:
        d = proto.next_deadline()
        if d is not None:
            self._push(max(d, self.now), proto)

    def _push(self, t: float, payload: SwimProtocol | tuple[str, str, bytes]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, payload))

    def _handle(self, proto: SwimProtocol, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                size = len(action.body) + SEAL_OVERHEAD
                self.max_datagram = max(self.max_datagram, size)
                assert size <= self.settings.max_datagram_bytes
                if self.record_sends:
                    self.sent.append((proto.name, action))
                if (proto.address in self.mute or self.rng.random() < self.loss
                        or {proto.address, action.address} & self.cut):
                    continue
                delay = self.rng.uniform(*self.latency)
                self._push(self.now + delay, (action.address, proto.address, action.body))
            elif isinstance(action, StartSync):
                peer = self.nodes.get(action.address)
                if (peer is None or action.address in self.crashed
                        or {proto.address, action.address} & self.cut):
                    continue  # connection refused
                reply, peer_actions = peer.handle_sync(proto.local_state(), self.now)
                self._handle(peer, peer_actions)
                self._arm(peer)
                self._handle(proto, proto.merge_state(reply, self.now))
            else:
                self.events.append((self.now, proto.name, action))

    # -- views

    def status(self, observer: str, subject: str) -> str | None:
        member = self.by_name[observer].member(subject)
        return None if member is None else member.status

    def full_view(self, nodes: Iterable[SwimProtocol] | None = None) -> bool:
        nodes = list(self.live() if nodes is None else nodes)
        names = [p.name for p in nodes]
        return all(
            (m := p.member(q)) is not None and m.status == "alive"
            for p in nodes for q in names
        )

    def all_see(self, subject: str, status: str, *, incarnation: int | None = None) -> bool:
        for p in self.live():
            if p.name == subject:
                continue
            m = p.member(subject)
            if m is None or m.status != status:
                return False
            if incarnation is not None and m.incarnation != incarnation:
                return False
        return True

    def kinds(self, subject: str) -> list[tuple[float, str, str]]:
        return [(t, obs, e.kind) for t, obs, e in self.events if e.member.name == subject]


def converged(n: int, *, seed: int = 1, loss: float = 0.0,
              settings: SwimSettings = SETTINGS) -> SimNet:
    net = SimNet(seed=seed, loss=loss, settings=settings)
    net.cluster(n)
    net.run_until(net.full_view, 60)
    return net


def same_view(net: SimNet) -> bool:
    views = {tuple((m.name, m.status, m.incarnation) for m in p.members()) for p in net.live()}
    return len(views) == 1


# ---------------------------------------------------------------- joining


def test_join_through_one_seed_converges_to_one_full_view() -> None:
    net = SimNet(seed=7)
    nodes = net.cluster(6)
    took = net.run_until(net.full_view, 30)
    assert took <= 5 * SETTINGS.probe_interval_s
    net.run_until(lambda: same_view(net), 10)
    names = [m.name for m in nodes[0].members()]
    assert names == sorted(p.name for p in nodes)
    joined = Counter(obs for _, obs, e in net.events if e.kind == "joined")
    assert all(joined[p.name] == 5 for p in nodes)  # each learned of the 5 others once
    assert not [e for _, _, e in net.events if e.kind in ("suspected", "dead")]


def test_nodes_may_start_before_their_seed() -> None:
    net = SimNet(seed=2)
    a = net.add("a", seeds=["seed:7100"])  # the seed is not up yet
    b = net.add("b", seeds=["seed:7100"])
    net.run(5)
    assert a.member("b") is None and a.live_count() == 1
    net.add("seed")
    took = net.run_until(lambda: net.full_view([a, b, net.by_name["seed"]]), 10)
    assert took <= 2 * SETTINGS.join_retry_s + SETTINGS.probe_interval_s


@pytest.mark.parametrize("n", [100])
def test_hundred_members_converge_within_log_n_periods(n: int) -> None:
    net = SimNet(seed=11)
    net.cluster(n)
    periods = net.run_until(net.full_view, 60) / SETTINGS.probe_interval_s
    assert periods <= 3 * math.log2(n), periods
    # One more change spreads by epidemic gossip alone, also in O(log n) periods.
    net.add("late", seeds=["n17:7100"])
    periods = net.run_until(lambda: net.all_see("late", "alive"), 60)
    assert periods <= 2 * math.log2(n + 1), periods


def test_one_update_spreads_in_time_growing_like_log_n() -> None:
    rounds = {}
    for n in (8, 32, 128):
        net = converged(n, seed=5)
        net.add("late", seeds=["n1:7100"])
        rounds[n] = net.run_until(functools.partial(net.all_see, "late", "alive"), 60)
    # Each 4x growth of the cluster adds a few periods, far from 4x the time.
    assert rounds[128] <= rounds[8] + 4 * math.log2(128 / 8) * SETTINGS.probe_interval_s
    assert rounds[128] < 8 * SETTINGS.probe_interval_s, rounds


# ---------------------------------------------------------------- failure detection


def test_crashed_member_is_suspected_then_dead_within_the_bound() -> None:
    n = 8
    net = converged(n, seed=4)
    t0 = net.now
    net.crash("n3")
    took = net.run_until(lambda: net.all_see("n3", "dead"), 120)
    min_s, max_s, _ = suspicion_timeouts(SETTINGS, n)
    # Somebody probes n3 within n-1 periods (round robin), fails by the end of that
    # period, and a suspicion never outlasts max_s (no local health penalty here).
    bound = (n + 1) * SETTINGS.probe_interval_s + max_s + 1.0
    assert took <= bound
    # With everyone confirming, the suspicion shrinks to its minimum: within one round
    # robin plus the minimum (about 7 s typically, 10 s at most over 40 seeds).
    assert took <= (n - 1) * SETTINGS.probe_interval_s + min_s, took
    history = net.kinds("n3")
    first_suspect = min(t for t, _, kind in history if kind == "suspected" and t >= t0)
    first_dead = min(t for t, _, kind in history if kind == "dead")
    assert t0 < first_suspect < first_dead
    assert first_dead - first_suspect >= min_s - 1e-9
    # Nobody else was ever suspected: the failure was pinned on the right member.
    assert {e.member.name for _, _, e in net.events if e.kind in ("suspected", "dead")} == {"n3"}
    assert same_view(net)
    assert all(p.health.score == 0 for p in net.live())


def test_suspected_member_that_is_alive_refutes() -> None:
    net = converged(5, seed=6)
    victim = net.by_name["n2"]
    incarnation = victim.incarnation
    net.mute.add(victim.address)  # it hears everything, but nothing it says gets out
    net.run_until(lambda: any(net.status(p.name, "n2") == "suspect" for p in net.live()), 30)
    net.mute.clear()
    net.run_until(lambda: net.all_see("n2", "alive", incarnation=victim.incarnation), 10)
    assert victim.incarnation > incarnation
    assert victim.statistics().refutations >= 1
    assert victim.health.score >= 1  # Lifeguard: being suspected counts against us
    assert not [e for _, _, e in net.events if e.kind == "dead"]
    alive_again = [obs for _, obs, e in net.events if e.kind == "alive"]
    assert alive_again  # observers saw the suspicion end


def suspicion_deadline(p: SwimProtocol, name: str) -> float:
    """When ``p``'s suspicion of ``name`` ends (``p`` suspects it)."""
    suspicion = p._table.records[name].suspicion
    assert suspicion is not None
    return suspicion.deadline()


def test_suspicion_shrinks_with_independent_confirmations() -> None:
    settings = SwimSettings()
    min_s, max_s, k = suspicion_timeouts(settings, 10)
    assert (min_s, max_s, k) == (4.0, 24.0, 2)
    assert suspicion_timeouts(settings, 100)[0] == 8.0  # scaled with log10 n
    assert suspicion_timeouts(settings, 3)[2] == 0  # too few members to confirm
    net = converged(10, seed=8)
    observer = net.by_name["n0"]
    x = observer.member("n5")
    assert x is not None
    t0 = net.now
    suspect = Update("n5", x.address, x.incarnation, "suspect", by="n1")
    observer.receive(Gossip(0, "n1", (suspect,)), "n1:7100", t0)
    assert observer.next_deadline() is not None
    deadline = suspicion_deadline(observer, "n5")
    assert deadline == pytest.approx(t0 + max_s)
    observer.receive(Gossip(0, "n2", (msgspec.structs.replace(suspect, by="n2"),)),
                     "n2:7100", t0)
    deadline = suspicion_deadline(observer, "n5")
    assert min_s < deadline - t0 < max_s
    observer.receive(Gossip(0, "n3", (msgspec.structs.replace(suspect, by="n3"),)),
                     "n3:7100", t0)
    deadline = suspicion_deadline(observer, "n5")
    assert deadline == pytest.approx(t0 + min_s)


def test_ten_percent_loss_converges_without_false_deaths() -> None:
    net = SimNet(seed=9, loss=0.10)
    net.cluster(10)
    net.run_until(net.full_view, 60)
    net.run(180)
    assert not [e for _, _, e in net.events if e.kind == "dead"]
    net.run_until(net.full_view, 30)
    suspicions = sum(p.statistics().suspicions for p in net.live())
    refutations = sum(p.statistics().refutations for p in net.live())
    assert refutations >= 1 or suspicions == 0
    # Loss does get noticed and survived: probes failed and indirect probes rescued some.
    assert sum(p.statistics().probes_failed for p in net.live()) >= 1
    assert sum(p.statistics().ping_reqs_sent for p in net.live()) > 0


def test_ten_percent_loss_still_detects_a_crash() -> None:
    net = converged(10, seed=12, loss=0.10)
    net.crash("n4")
    took = net.run_until(lambda: net.all_see("n4", "dead"), 120)
    _, max_s, _ = suspicion_timeouts(SETTINGS, 10)
    assert took <= 11 * SETTINGS.probe_interval_s + max_s
    assert {e.member.name for _, _, e in net.events if e.kind == "dead"} == {"n4"}


# ---------------------------------------------------------------- incarnations


@pytest.mark.parametrize("wait_for_dead", [True, False], ids=["after-death", "fast-restart"])
def test_restarted_member_replaces_the_old_incarnation_for_good(wait_for_dead: bool) -> None:
    net = converged(5, seed=13)
    old = net.by_name["n4"]
    old_state = old.local_state()
    net.crash("n4")
    if wait_for_dead:
        net.run_until(lambda: net.all_see("n4", "dead"), 60)
    else:
        net.run(0.2)
    new = net.add("n4", incarnation=old.incarnation + 5_000, seeds=["n0:7100"])
    net.run_until(lambda: net.all_see("n4", "alive", incarnation=new.incarnation), 15)
    net.run_until(lambda: same_view(net), 10)  # raises if the views never agree
    # Stale news of the old life, by gossip or by push-pull, changes nothing.
    stale = Update("n4", old.address, old.incarnation, "alive")
    for p in net.live():
        if p is not new:
            p.receive(Gossip(0, "x", (stale,)), "n1:7100", net.now)
            p.merge_state(old_state, net.now)
    assert net.all_see("n4", "alive", incarnation=new.incarnation)
    net.run(30)
    assert net.all_see("n4", "alive", incarnation=new.incarnation)
    for _, _, event in net.events:
        if event.member.name == "n4" and event.member.status == "alive":
            assert event.member.incarnation in (old.incarnation, new.incarnation)
    after = [e for t, _, e in net.events if e.member.name == "n4" and e.kind == "dead"
             and e.member.incarnation == new.incarnation]
    assert not after


def test_forgotten_member_is_never_resurrected_by_its_old_incarnation() -> None:
    settings = SwimSettings(forget_after_s=20.0)
    net = converged(4, seed=14, settings=settings)
    old = net.by_name["n3"]
    net.crash("n3")
    net.run_until(lambda: net.all_see("n3", "dead"), 60)
    net.run(settings.forget_after_s * 1.2)
    observer = net.by_name["n1"]
    assert observer.member("n3") is None  # reaped; only a tombstone is left
    observer.receive(Gossip(0, "x", (Update("n3", old.address, old.incarnation, "alive"),)),
                     "n2:7100", net.now)
    assert observer.member("n3") is None
    newer = Update("n3", old.address, old.incarnation + 1, "alive")
    observer.receive(Gossip(0, "x", (newer,)), "n2:7100", net.now)
    member = observer.member("n3")
    assert member is not None and member.incarnation == old.incarnation + 1


def test_update_precedence_rules() -> None:
    p = SwimProtocol("me", "me:1", 50, random=random.Random(1))
    now = 0.0

    def push(status: UpdateStatus, inc: int, *, by: str = "z") -> str | None:
        u = Update("x", "x:1", inc, status, by=by)
        p.receive(Gossip(0, "z", (u,)), "z:1", now)
        m = p.member("x")
        return None if m is None else f"{m.status}@{m.incarnation}"

    assert push("dead", 1) is None  # never seen alive: a tombstone only
    assert push("alive", 1) is None  # ... which buries incarnation 1
    assert push("alive", 2) == "alive@2"
    assert push("alive", 1) == "alive@2"  # stale
    assert push("suspect", 1) == "alive@2"  # stale
    assert push("suspect", 2) == "suspect@2"
    assert push("alive", 2) == "suspect@2"  # an equal alive does not clear a suspicion
    assert push("alive", 3) == "alive@3"  # a refutation does
    assert push("dead", 3) == "dead@3"
    assert push("suspect", 4) == "dead@3"  # only a newer alive brings it back
    assert push("alive", 3) == "dead@3"
    assert push("left", 3) == "left@3"  # a refinement
    assert push("dead", 3) == "left@3"
    assert push("alive", 9) == "alive@9"  # a restart
    assert push("left", 9) == "left@9"


def test_accusations_about_itself_are_refuted_never_applied() -> None:
    p = SwimProtocol("me", "me:1", 50, random=random.Random(1))
    for status in ("suspect", "dead", "left"):
        before = p.incarnation
        accusation = Update("me", "me:1", before, status)
        out = p.receive(Gossip(0, "z", (accusation,)), "z:1", 0.0)
        assert p.incarnation == before + 1
        me = p.member("me")
        assert me is not None and me.status == "alive"
        # Being declared dead is reported too: the node decides whether to stay.
        expected = ["declared_dead", "updated"] if status == "dead" else ["updated"]
        assert [e.kind for e in out if isinstance(e, MemberEvent)] == expected
    stale = p.incarnation
    p.receive(Gossip(0, "z", (Update("me", "me:1", stale - 1, "dead"),)), "z:1", 0.0)
    assert p.incarnation == stale  # an old accusation is ignored
    # An alive from a previous life that ran ahead: jump past it.
    p.receive(Gossip(0, "z", (Update("me", "me:1", stale + 10, "alive"),)), "z:1", 0.0)
    assert p.incarnation == stale + 11
    assert p.statistics().refutations == 4


def declared(out: list[Action]) -> list[tuple[str, bool]]:
    return [(e.kind, e.downed) for e in out
            if isinstance(e, MemberEvent) and e.kind == "declared_dead"]


def test_a_death_by_detection_is_refuted_and_a_downing_is_final() -> None:
    """Reachability is not downing: ``dead`` from the failure detector is refuted (the
    node stays); ``dead`` with ``downed`` (a split-brain decision) is reported as such
    and not refuted."""
    p = SwimProtocol("me", "me:1", 50, random=random.Random(1))
    out = p.receive(Gossip(0, "z", (Update("me", "me:1", 50, "dead", by="z"),)), "z:1", 0.0)
    assert declared(out) == [("declared_dead", False)]
    assert p.incarnation == 51
    # A late copy of the refuted declaration is no news.
    out = p.receive(Gossip(0, "z", (Update("me", "me:1", 50, "dead", by="y"),)), "z:1", 0.0)
    assert declared(out) == [] and p.incarnation == 51
    # The decision: reported as downed, not refuted.
    downing = Update("me", "me:1", 50, "dead", by="z", downed=True)
    out = p.receive(Gossip(0, "z", (downing,)), "z:1", 0.0)
    assert declared(out) == [("declared_dead", True)]
    assert p.incarnation == 51


@pytest.mark.parametrize("seed", range(5))
def test_a_cut_node_declared_dead_refutes_within_a_reconnect_interval_of_the_heal(
        seed: int) -> None:
    """A node cut off until the others declared it dead, plus a second, then healed:
    they reach out to it (a push-pull each ``reconnect_interval_s``), it hears of its
    death and refutes, well within a split-brain ``stable_after_s`` (7 s by default).
    Without the reconnects it waited for its own Lifeguard-slowed probes or the next
    ``sync_interval_s``."""
    net = SimNet(seed=seed)
    net.cluster(3)
    net.run_until(lambda: same_view(net) and len(net.live()[0].members()) == 3, 10)
    victim = net.by_name["n0"]  # the seed: it has no seeds of its own to retry
    net.cut.add(victim.address)
    net.run_until(lambda: all(net.status(o, "n0") == "dead" for o in ("n1", "n2")), 15)
    net.run(1.0)
    net.cut.clear()
    took = net.run_until(lambda: all(net.status(o, "n0") == "alive" for o in ("n1", "n2")),
                         10)
    assert took <= 2.5, took  # two reconnect intervals and a round trip


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_healed_cut_nodes_verdicts_about_the_others_kill_nobody(seed: int) -> None:
    """A node cut off long enough declares the others dead from its side. After the heal
    its gossip carries those verdicts to members that never lost each other: they must
    not declare each other dead for it (each death moves keys and re-elects partitions;
    benchmarks/cut_and_heal.py saw a survivor declare the other survivor dead)."""
    net = SimNet(seed=seed)
    net.cluster(3)
    net.run_until(lambda: same_view(net) and len(net.live()[0].members()) == 3, 10)
    net.cut.add(net.by_name["n0"].address)
    net.run_until(lambda: all(net.status("n0", o) == "dead" for o in ("n1", "n2"))
                  and all(net.status(o, "n0") == "dead" for o in ("n1", "n2")), 30)
    net.events.clear()
    net.cut.clear()
    net.run_until(lambda: all(net.status(o, "n0") == "alive" for o in ("n1", "n2"))
                  and net.status("n0", "n1") == "alive" and net.status("n0", "n2") == "alive",
                  15)
    net.run(5.0)
    deaths = [(at, observer, e.member.name) for at, observer, e in net.events
              if e.kind == "dead" and observer in ("n1", "n2")
              and e.member.name in ("n1", "n2")]
    assert deaths == []


def test_a_death_declared_by_a_member_held_dead_is_only_a_suspicion() -> None:
    p = SwimProtocol("me", "me:1", 50, random=random.Random(1))
    for name in ("a", "b"):
        p.receive(Gossip(0, name, (Update(name, f"{name}:1", 7, "alive"),)), f"{name}:1", 0.0)
    p.receive(Gossip(0, "b", (Update("a", "a:1", 7, "dead", by="b"),)), "b:1", 1.0)
    a = p.member("a")
    assert a is not None and a.status == "dead"  # b is alive here: its word counts
    # a, held dead, declares b dead: b is only suspected.
    p.receive(Gossip(0, "a", (Update("b", "b:1", 7, "dead", by="a"),)), "a:1", 2.0)
    b = p.member("b")
    assert b is not None and b.status == "suspect"
    # a refutes; its verdicts stay suspect for a while (b refuted too) ...
    p.receive(Gossip(0, "a", (Update("a", "a:1", 8, "alive"),)), "a:1", 3.0)
    p.receive(Gossip(0, "b", (Update("b", "b:1", 8, "alive"),)), "b:1", 3.1)
    p.receive(Gossip(0, "a", (Update("b", "b:1", 8, "dead", by="a"),)), "a:1", 3.2)
    b = p.member("b")
    assert b is not None and b.status == "suspect"
    assert p.statistics().stale_verdicts == 2
    # ... and count again once it has been back longer than any suspicion lasts.
    p.receive(Gossip(0, "b", (Update("b", "b:1", 9, "alive"),)), "b:1", 4.0)
    later = 3.0 + suspicion_timeouts(SETTINGS, 2)[1] + 1
    p.receive(Gossip(0, "a", (Update("b", "b:1", 9, "dead", by="a"),)), "a:1", later)
    b = p.member("b")
    assert b is not None and b.status == "dead"


def test_a_downed_life_cannot_refute_its_way_back_but_a_new_life_joins() -> None:
    net = SimNet(seed=4)
    net.cluster(3)
    net.run_until(lambda: same_view(net) and len(net.live()[0].members()) == 3, 10)
    judge, victim = net.by_name["n0"], net.by_name["n2"]
    life = victim.incarnation
    net.events.clear()
    net._handle(judge, judge.down(["n2"], net.now))
    net.run_until(lambda: all(net.status(p.name, "n2") == "dead"
                              for p in (judge, net.by_name["n1"])), 5)
    # The victim hears it was downed (gossip, or the ack to its next probe) ...
    net.run_until(lambda: any(n == "n2" and e.kind == "declared_dead" and e.downed
                              for _, n, e in net.events), 5)
    assert not [e for _, n, e in net.events
                if n == "n2" and e.kind == "declared_dead" and not e.downed]
    # ... and whatever it sends as this life is refused everywhere.
    refutation = Update("n2", victim.address, life + 5, "alive")
    for p in (judge, net.by_name["n1"]):
        p.receive(Gossip(0, "n2", (refutation,)), victim.address, net.now)
        member = p.member("n2")
        assert member is not None and member.status == "dead"
    # A restarted process is a newer life: a member again.
    net.crash("n2")
    net.add("n2", incarnation=life + 60_000, seeds=["n0:7100"])
    net.run_until(lambda: all(net.status(p.name, "n2") == "alive"
                              for p in (judge, net.by_name["n1"])), 15)


def test_a_downing_by_a_downed_member_is_ignored() -> None:
    """A node cut off alone may decide on a partial view before it downs itself; its
    verdicts about the majority must not take the majority down after the heal: about
    others they do not count, about oneself they are refuted like a detector's word."""
    p = SwimProtocol("me", "me:1", 50, random=random.Random(1))
    for name in ("a", "b"):
        p.receive(Gossip(0, name, (Update(name, f"{name}:1", 7, "alive"),)), f"{name}:1", 0.0)
    p.down(["a"], 1.0)
    about_me = Update("me", "me:1", 50, "dead", by="a", downed=True)
    about_b = Update("b", "b:1", 7, "dead", by="a", downed=True)
    out = p.receive(Gossip(0, "a", (about_me, about_b)), "a:1", 2.0)
    assert declared(out) == [("declared_dead", False)]
    assert p.incarnation == 51  # refuted
    b = p.member("b")
    assert b is not None and b.status == "alive"


def test_a_downing_of_a_member_known_only_as_dead_is_news_to_subscribers() -> None:
    """A node that joined after ``x`` died knows ``x`` only as a tombstone; a split-brain
    decision about ``x`` heard later must still reach its subscribers (``downed()`` and a
    new version), so its replication stops waiting for ``x``'s memory."""
    p = SwimProtocol("me", "me:1", 50, random=random.Random(1))
    p.receive(Gossip(0, "a", (Update("a", "a:1", 7, "alive"),
                              Update("x", "x:1", 9, "dead", by="a"))), "a:1", 0.0)
    assert p.member("x") is None and p.downed() == {}
    version = p.version
    p.receive(Gossip(0, "a", (Update("x", "x:1", 9, "dead", by="a", downed=True),)), "a:1", 1.0)
    assert p.downed() == {"x": 9}
    assert p.version > version
    # The same decision heard again is no news.
    version = p.version
    p.receive(Gossip(0, "a", (Update("x", "x:1", 9, "dead", by="a", downed=True),)), "a:1", 2.0)
    assert p.version == version


# ---------------------------------------------------------------- protocol details


def test_ping_for_another_name_is_not_acked() -> None:
    p = SwimProtocol("me", "me:1", 1, random=random.Random(1))
    assert p.receive(Ping(1, "someone-else", "z"), "z:1", 0.0) == []
    assert p.statistics().misdirected_pings == 1
    (send,) = p.receive(Ping(2, "me", "z"), "z:1", 0.0)
    assert isinstance(send, Send) and send.address == "z:1"
    assert isinstance(send.message, Ack) and send.message.seq == 2


def test_indirect_probe_relays_the_ack_or_nacks_in_time() -> None:
    helper = SwimProtocol("h", "h:1", 1, random=random.Random(1))
    (ping,) = helper.receive(PingReq(7, "t", "t:1", 400, "a"), "a:1", 10.0)
    assert isinstance(ping, Send) and ping.address == "t:1"
    assert isinstance(ping.message, Ping) and ping.message.target == "t"
    (ack,) = helper.receive(Ack(ping.message.seq), "t:1", 10.1)
    assert isinstance(ack, Send) and ack.address == "a:1"
    assert isinstance(ack.message, Ack) and ack.message.seq == 7
    # No answer from the target: a nack when the requester's window is 80% over.
    helper.receive(PingReq(8, "t", "t:1", 400, "a"), "a:1", 20.0)
    assert not [a for a in helper.tick(20.39) if isinstance(a, Send)]
    assert helper.next_deadline() == pytest.approx(20.4)
    sends = [a for a in helper.tick(20.4) if isinstance(a, Send)]
    assert [type(s.message).__name__ for s in sends] == ["Nack"]
    assert sends[0].message.seq == 8


def test_lifeguard_missed_nacks_raise_local_health() -> None:
    # A node whose own datagrams are lost sees probes fail AND nacks go missing.
    net = converged(6, seed=15)
    sick = net.by_name["n1"]
    net.mute.add(sick.address)
    net.run(6)
    assert sick.health.score >= 2
    assert sick.statistics().probes_failed >= 2
    interval_before = sick.health.scale(SETTINGS.probe_interval_s)
    assert interval_before > SETTINGS.probe_interval_s
    net.mute.clear()
    # Once its messages flow again, answered probes bring its health back.
    net.run_until(lambda: sick.health.score == 0, 120)


def test_graceful_leave_marks_left_without_suspicion() -> None:
    net = converged(5, seed=16)
    leaver = net.by_name["n2"]
    t0 = net.now
    net._handle(leaver, leaver.leave(net.now))
    net._arm(leaver)
    took = net.run_until(lambda: net.all_see("n2", "left"), 5, check_every=0.001)
    assert took < 0.05  # told directly, not found out
    net.run_until(lambda: leaver.leave_acknowledged, 2)
    assert not [e for t, _, e in net.events if t >= t0 and e.kind in ("suspected", "dead")]
    me = leaver.member("n2")
    assert me is not None and me.status == "left"
    net.run(20)  # it is never probed again, hence never suspected
    assert not [e for t, _, e in net.events if t >= t0 and e.kind in ("suspected", "dead")]


def test_graceful_leave_survives_lost_datagrams() -> None:
    net = converged(5, seed=17)
    leaver = net.by_name["n2"]
    net.loss = 0.5
    net._handle(leaver, leaver.leave(net.now))
    net._arm(leaver)
    net.run_until(lambda: net.all_see("n2", "left"), 10)
    net.run_until(lambda: leaver.leave_acknowledged, 10)


def test_datagrams_stay_bounded_and_updates_are_retransmitted_a_bounded_number_of_times() -> None:
    settings = SwimSettings(max_datagram_bytes=600)
    net = SimNet(seed=18, settings=settings)
    net.record_sends = True
    net.cluster(40)  # 40 joins: far more updates than fit in one datagram
    net.run_until(net.full_view, 60)
    net.crash("n7")
    net.run_until(lambda: net.all_see("n7", "dead"), 120)
    net.run(60)
    assert 500 < net.max_datagram <= 600  # datagrams are filled, never overfilled
    limit = retransmit_limit(settings.retransmit_mult, 41)
    per_node: Counter[tuple[str, Update]] = Counter()
    for sender, send in net.sent:
        for update in send.message.updates:
            per_node[sender, update] += 1
    assert max(per_node.values()) <= limit
    # The epidemic ends: after a quiet minute nothing is left to piggyback.
    assert all(p.statistics().queued_updates == 0 for p in net.live())


def test_buddy_system_piggybacks_the_suspicion_first() -> None:
    p = SwimProtocol("me", "me:1", 1, random=random.Random(3),
                     settings=SwimSettings())
    p.receive(Gossip(0, "z", (Update("t", "t:1", 4, "alive"),)), "z:1", 0.0)
    p.receive(Gossip(0, "z", (Update("t", "t:1", 4, "suspect", by="z"),)), "z:1", 0.0)
    deadline = p.next_deadline()
    assert deadline is not None
    sends = [a for a in p.tick(deadline) if isinstance(a, Send)]
    (ping,) = [s.message for s in sends if isinstance(s.message, Ping)]
    assert ping.target == "t"
    assert ping.updates[0] == Update("t", "t:1", 4, "suspect", by="me")


# ---------------------------------------------------------------- push-pull and settings


def test_push_pull_merges_and_answers_with_the_merged_state() -> None:
    a = SwimProtocol("a", "a:1", 1, random=random.Random(1))
    b = SwimProtocol("b", "b:1", 2, random=random.Random(2))
    reply, events = b.handle_sync(a.local_state(), 0.0)
    assert [e.kind for e in events if isinstance(e, MemberEvent)] == ["joined"]
    assert {u.name for u in decode_sync_state(reply).members} == {"a", "b"}
    a.merge_state(reply, 0.0)
    assert a.member("b") is not None
    with pytest.raises(ProtocolError, match="invalid membership sync"):
        a.merge_state(b"\x93garbage", 0.0)


def test_partition_heals_through_reconnect() -> None:
    net = converged(6, seed=19)
    side_a = {"n0:7100", "n1:7100", "n2:7100"}
    lossy_send = net._handle

    def partitioned(proto: SwimProtocol, actions: list[Action]) -> None:
        kept: list[Action] = []
        for action in actions:
            if (isinstance(action, Send | StartSync)
                    and (proto.address in side_a) != (action.address in side_a)):
                continue
            kept.append(action)
        lossy_send(proto, kept)

    net._handle = partitioned  # type: ignore[method-assign]
    net.run_until(lambda: all(
        net.status(p, q) == "dead" for p in ("n0", "n1", "n2") for q in ("n3", "n4", "n5")
    ), 120)
    net._handle = lossy_send  # type: ignore[method-assign]
    took = net.run_until(net.full_view, 3 * SETTINGS.sync_interval_s + 10)
    assert took <= 3 * SETTINGS.sync_interval_s + 10
    assert not [p.name for p in net.live() if p.incarnation == 1000 and
                any(e.member.name == p.name and e.kind == "dead" for _, _, e in net.events)]


@pytest.mark.parametrize(("field", "value"), [
    ("probe_interval_s", 0.0), ("probe_timeout_s", 2.0), ("indirect_probes", -1),
    ("retransmit_mult", 0), ("max_datagram_bytes", 100), ("sync_interval_s", -1.0),
])
def test_settings_are_checked(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        SwimSettings(**{field: value})  # type: ignore[arg-type]
    assert info.value.key == field


# ---------------------------------------------------------------- wire format


def test_sealed_datagrams_open_only_with_the_right_key_and_intact() -> None:
    codec = GossipCodec()
    key = gossip_key(b"secret")
    body = codec.encode(Ping(3, "t", "s", (Update("a", "a:1", 7, "alive"),)))
    datagram = seal(key, body)
    assert len(datagram) == len(body) + SEAL_OVERHEAD
    assert unseal(key, datagram) == body
    assert codec.decode(body) == Ping(3, "t", "s", (Update("a", "a:1", 7, "alive"),))
    assert unseal(gossip_key(b"other"), datagram) is None
    for i in (0, 1, len(datagram) // 2, len(datagram) - 1):  # any flipped byte
        tampered = bytearray(datagram)
        tampered[i] ^= 0x01
        assert unseal(key, bytes(tampered)) is None
    assert unseal(key, b"") is None
    assert unseal(key, datagram[:SEAL_OVERHEAD]) is None
    assert gossip_key(b"secret") != b"secret" and len(gossip_key(b"secret")) == 32


def test_gossip_address_is_the_tcp_address_by_convention() -> None:
    assert gossip_address("10.0.0.7:7100") == "10.0.0.7:7100"
    assert gossip_address("[::1]:7100") == "[::1]:7100"


@pytest.mark.parametrize("body", [
    b"", b"\xc1", b"\x93\xa4ping\x01", msgspec.msgpack.encode(["nope", 1]),
    msgspec.msgpack.encode(["ack", -1, []]),
    msgspec.msgpack.encode(["gsp", 0, "s", [["a", "a:1", 2**63, "alive", "member", ""]]]),
    msgspec.msgpack.encode(["gsp", 0, "s", [["a", "a:1", 1, "zombie", "member", ""]]]),
    msgspec.msgpack.encode(["ping", 1, "", "s", []]),
])
def test_malformed_bodies_raise_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="invalid gossip body"):
        GossipCodec().decode(body)
