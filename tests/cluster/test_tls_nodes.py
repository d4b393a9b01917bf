"""Nodes configured with --tls-cert/--tls-key/--tls-ca talk over mutual TLS."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import pytest
from cluster_agents import Tally

import phoenix_cluster as phx
from phoenix_cluster.testing import free_port


class TlsOptions(TypedDict):
    tls_cert: str
    tls_key: str
    tls_ca: str


def tls_options(files: dict[str, Path], who: str) -> TlsOptions:
    return {"tls_cert": str(files[f"{who}.pem"]), "tls_key": str(files[f"{who}.key"]),
            "tls_ca": str(files["ca.pem"])}


async def test_mutual_tls_cluster_serves_calls(tls_files: dict[str, Path]) -> None:
    address = f"127.0.0.1:{free_port()}"
    async with phx.Node(name="tls-server", listen=address, cookie="c",
                        **tls_options(tls_files, "server")) as server:
        async with phx.Node(name="tls-client", role="client", seeds=[address], cookie="c",
                            **tls_options(tls_files, "client")) as client:
            assert await client.ref(Tally, "t").add(3) == 3
        assert server.statistics().agents.active_agents == 1
        # Without a certificate the server refuses the connection.
        async with phx.Node(role="client", seeds=[address], cookie="c") as plain:
            with pytest.raises((phx.NodeUnavailable, phx.ProtocolError,
                                phx.AuthenticationError)):
                await plain.ref(Tally, "t").options(timeout=3).add(1)


def test_bad_tls_settings_are_config_errors(tls_files: dict[str, Path],
                                            tmp_path: Path) -> None:
    from phoenix_cluster._transport.tls import tls_contexts

    with pytest.raises(phx.ConfigError, match="go together"):
        tls_contexts(str(tls_files["server.pem"]), None, None)
    with pytest.raises(phx.ConfigError, match="no such file"):
        tls_contexts(str(tmp_path / "nope.pem"), str(tls_files["server.key"]), None)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(phx.ConfigError, match="cannot load TLS files"):
        tls_contexts(str(garbage), str(garbage), None)
    assert tls_contexts(None, None, None) == (None, None)
