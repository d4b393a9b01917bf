"""Helpers for transport tests: messages, an echo handler, raw sockets, a TCP proxy, TLS files.

Imported by name (``from transport_helpers import ...``); the fixtures that close what
these make live in ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import subprocess
from collections.abc import Callable
from pathlib import Path

from phoenix_cluster._transport.base import PeerConnection
from phoenix_cluster._transport.tcp import TcpTransport, parse_address
from phoenix_cluster._wire.codec import WireCodec
from phoenix_cluster._wire.frames import FrameDecoder, pack_frames
from phoenix_cluster._wire.handshake import ClientHandshake
from phoenix_cluster._wire.messages import Call, Cast, Reply

SECRET = b"transport-test-secret"


def make_call(rid: int, payload: bytes = b"", method: str = "echo") -> Call:
    return Call(request_id=rid, kind="test", key="k", method=method, payload=payload,
                timeout_ms=5_000)


def make_cast(rid: int, payload: bytes = b"") -> Cast:
    return Cast(request_id=rid, kind="test", key="k", method="note", payload=payload)


async def echo(peer: PeerConnection, frame: Call | Cast) -> Reply | None:
    if isinstance(frame, Call):
        return Reply(request_id=frame.request_id, payload=frame.payload)
    return None


MakeTransport = Callable[..., TcpTransport]
"""The ``make_transport`` fixture: ``make(name, **TcpTransport keywords)``."""


async def open_raw(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = parse_address(address)
    return await asyncio.open_connection(host, port)


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Read until EOF or reset; fail if the peer keeps the socket open past ``timeout``."""
    data = b""
    async with asyncio.timeout(timeout):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


async def close_raw(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def raw_authenticated(
    address: str, *, name: str = "raw-client", secret: bytes = SECRET
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw socket that passed the real handshake: what an authenticated but buggy peer has."""
    reader, writer = await open_raw(address)
    codec, decoder = WireCodec(), FrameDecoder()
    hs = ClientHandshake(secret=secret, node=name, incarnation=1)
    writer.write(pack_frames([codec.encode(m) for m in hs.messages_to_send()]))
    result = None
    while result is None:
        data = await reader.read(65536)
        assert data, "server closed during the handshake"
        for body in decoder.feed(data):
            if result is None:
                result = hs.receive(codec.decode(body))
                out = hs.messages_to_send()
                if out:
                    writer.write(pack_frames([codec.encode(m) for m in out]))
    return reader, writer


class Proxy:
    """A TCP proxy that can stop forwarding (a paused peer) or drop everything (a crash)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._connect(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        host, port = parse_address(self.target)
        up_reader, up_writer = await asyncio.open_connection(host, port)
        self._writers.append(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self.flowing.wait()
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        dst.transport.abort()

    def pause(self) -> None:
        self.flowing.clear()

    def kill(self) -> None:
        """Abort every proxied socket, as if the peer's machine vanished."""
        for w in self._writers:
            w.transport.abort()

    async def aclose(self) -> None:
        self.kill()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)


# --- TLS ----------------------------------------------------------------------------------


def certs_with_openssl(openssl: str, d: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d, timeout=60)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=phoenix test CA", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name in ("server", "client"):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        (d / f"{name}.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        )
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")


def certs_with_cryptography(d: Path) -> None:  # pragma: no cover - depends on the machine
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "phoenix test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    write_key(ca_key, d / "ca.key")
    for name in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
            ]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, d / f"{name}.key")
