"""DNS discovery against a tiny authoritative DNS server on 127.0.0.1 (UDP, free port).

The server speaks real DNS (dnspython builds and parses the messages): A, AAAA and SRV
answers, SRV glue in the additional section like a Kubernetes headless Service, NXDOMAIN
for unknown names, and a name it never answers (a hung resolver).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._membership.discovery import DiscoveryError
from phoenix_cluster._membership.discovery_dns import DnsSeeds
from phoenix_cluster._membership.discovery_poller import DiscoveryPoller
from phoenix_cluster._membership.discovery_spec import discovery_from_spec
from phoenix_cluster.errors import ConfigError
from phoenix_cluster.testing import wait_until

SRV_NAME = "_phoenix._tcp.phoenix.default.svc.cluster.local."


class FakeDns(asyncio.DatagramProtocol):
    """Answers from ``zone``: {(absolute name, type name): [rdata text, ...]}."""

    def __init__(self) -> None:
        self.zone: dict[tuple[str, str], list[str]] = {}
        self.glue = True
        self.silent: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name, kind = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, kind))
        if name in self.silent:
            return
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        records = self.zone.get((name, kind))
        if records:
            response.answer.append(dns.rrset.from_text_list(name, 5, "IN", kind, records))
            if kind == "SRV" and self.glue:
                for srv in response.answer[0]:
                    target = srv.target.to_text()
                    for glue_kind in ("A", "AAAA"):
                        if ips := self.zone.get((target, glue_kind)):
                            response.additional.append(
                                dns.rrset.from_text_list(target, 5, "IN", glue_kind, ips)
                            )
        elif not any(n == name for n, _ in self.zone):
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def fake_dns() -> AsyncIterator[tuple[FakeDns, str]]:
    loop = asyncio.get_running_loop()
    server = FakeDns()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: server, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    # Addresses are data only: nothing in these tests connects to them.
    server.zone = {
        ("phoenix.test.", "A"): ["127.0.20.2", "127.0.20.1", "127.0.20.1"],
        ("phoenix.test.", "AAAA"): ["::1", "fd00::2"],
        (SRV_NAME, "SRV"): [
            "0 50 7100 10-1-0-1.phoenix.default.svc.cluster.local.",
            "0 50 7101 10-1-0-2.phoenix.default.svc.cluster.local.",
        ],
        ("10-1-0-1.phoenix.default.svc.cluster.local.", "A"): ["127.0.21.1"],
        ("10-1-0-2.phoenix.default.svc.cluster.local.", "A"): ["127.0.21.2"],
        ("_nohost._tcp.test.", "SRV"): ["0 0 7100 gone.test."],
    }
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        transport.close()


async def test_a_records_with_a_port(fake_dns: tuple[FakeDns, str]) -> None:
    _, ns = fake_dns
    seeds = DnsSeeds("phoenix.test", 7100, "A", nameserver=ns)
    assert await seeds.seeds() == ["127.0.20.1:7100", "127.0.20.2:7100"]  # deduplicated
    assert "phoenix.test" in repr(seeds)


async def test_aaaa_records_are_bracketed(fake_dns: tuple[FakeDns, str]) -> None:
    _, ns = fake_dns
    seeds = DnsSeeds("phoenix.test", 7100, "AAAA", nameserver=ns)
    assert await seeds.seeds() == ["[::1]:7100", "[fd00::2]:7100"]


async def test_srv_of_a_headless_service_uses_glue_and_record_ports(
    fake_dns: tuple[FakeDns, str],
) -> None:
    server, ns = fake_dns
    seeds = DnsSeeds(SRV_NAME, kind="SRV", nameserver=ns)
    assert await seeds.seeds() == ["127.0.21.1:7100", "127.0.21.2:7101"]
    assert server.queries == [(SRV_NAME, "SRV")]  # glue: no extra lookups


async def test_srv_without_glue_resolves_targets_and_keeps_unresolvable_names(
    fake_dns: tuple[FakeDns, str],
) -> None:
    server, ns = fake_dns
    server.glue = False
    assert await DnsSeeds(SRV_NAME, kind="SRV", nameserver=ns).seeds() == [
        "127.0.21.1:7100",
        "127.0.21.2:7101",
    ]
    # A target with no address records is handed on by name; the transport resolves it.
    assert await DnsSeeds("_nohost._tcp.test.", kind="SRV", nameserver=ns).seeds() == [
        "gone.test:7100"
    ]
    # A port given with SRV overrides the records' ports.
    assert await DnsSeeds(SRV_NAME, 9000, kind="SRV", nameserver=ns).seeds() == [
        "127.0.21.1:9000",
        "127.0.21.2:9000",
    ]


async def test_unknown_name_and_silent_server_fail_with_clear_errors(
    fake_dns: tuple[FakeDns, str],
) -> None:
    server, ns = fake_dns
    with pytest.raises(DiscoveryError, match=r"nope\.test.*NXDOMAIN"):
        await DnsSeeds("nope.test.", 7100, nameserver=ns).seeds()
    server.silent.add("phoenix.test.")
    with pytest.raises(DiscoveryError, match=rf"no answer .* from {ns}"):
        await DnsSeeds("phoenix.test.", 7100, nameserver=ns, timeout_s=0.3).seeds()


async def test_spec_builds_dns_providers(fake_dns: tuple[FakeDns, str]) -> None:
    _, ns = fake_dns
    srv = discovery_from_spec(f"dns:srv:{SRV_NAME}?nameserver={ns}")
    assert await srv.seeds() == ["127.0.21.1:7100", "127.0.21.2:7101"]
    plain = discovery_from_spec(f"dns:phoenix.test:7200?nameserver={ns}&timeout=2")
    assert await plain.seeds() == ["127.0.20.1:7200", "127.0.20.2:7200"]
    six = discovery_from_spec(f"dns:aaaa:phoenix.test:7200?nameserver={ns}")
    assert await six.seeds() == ["[::1]:7200", "[fd00::2]:7200"]


@pytest.mark.parametrize(
    "spec",
    ["dns:phoenix.test", "dns:a:phoenix.test", "dns:srv:?nameserver=127.0.0.1",
     "dns:srv:x?nameserver=not-an-ip", "dns:srv:x?colour=blue"],
)
def test_bad_dns_specs(spec: str) -> None:
    with pytest.raises(ConfigError, match="expected one of") as info:
        discovery_from_spec(spec)
    assert info.value.key == "discovery"


async def test_poller_follows_dns_changes_and_survives_a_silent_server(
    fake_dns: tuple[FakeDns, str],
) -> None:
    server, ns = fake_dns
    got: list[list[str]] = []
    poller = DiscoveryPoller(
        DnsSeeds(SRV_NAME, kind="SRV", nameserver=ns, timeout_s=5.0),
        Env(),
        got.append,
        interval_s=0.05,
        timeout_s=0.3,
    )
    async with poller:
        await wait_until(lambda: len(got) == 1, what="first seeds")
        assert got[0] == ["127.0.21.1:7100", "127.0.21.2:7101"]
        server.silent.add(SRV_NAME)  # the resolver hangs: the poller's deadline cuts it
        await wait_until(lambda: poller.statistics().timeouts >= 1, what="a timeout")
        server.silent.clear()
        server.zone[(SRV_NAME, "SRV")].append(
            "0 50 7102 10-1-0-3.phoenix.default.svc.cluster.local."
        )
        server.zone[("10-1-0-3.phoenix.default.svc.cluster.local.", "A")] = ["127.0.21.3"]
        await wait_until(lambda: len(got) == 2, timeout=10, what="updated seeds")
    assert got[1] == ["127.0.21.1:7100", "127.0.21.2:7101", "127.0.21.3:7102"]
    assert poller.statistics().failure_streak == 0
