"""TLS contexts for peer connections, built from ``--tls-cert/--tls-key/--tls-ca``.

TLS adds confidentiality and integrity on the wire; the cluster-secret handshake still
runs inside it, so a node needs both the certificate chain and the secret. With a CA
given, TLS is mutual: each side presents its certificate and verifies the other's
against that CA. Host names are checked as usual: certificates must name the addresses
peers dial (``127.0.0.1``, a DNS name...), unless ``verify_hostname`` is off. That is for
networks where addresses come and go (Kubernetes pod IPs) and is allowed only with a CA
of the cluster's own: then any certificate that CA signed is accepted from any address,
so the CA must sign certificates for cluster members only.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from ..errors import ConfigError

__all__ = ["tls_contexts"]


def tls_contexts(
    cert: str | None, key: str | None, ca: str | None, *, verify_hostname: bool = True
) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """``(server_context, client_context)``, or ``(None, None)`` for plain TCP.

    Args:
        cert, key, ca: PEM files (``tls_cert``, ``tls_key``, ``tls_ca``).
        verify_hostname: whether a dialled peer's certificate must name the dialled
            address. ``False`` needs ``ca`` (else any public certificate would pass).

    Raises:
        ConfigError: only one of cert/key given, a file is missing or not valid PEM, or
            ``verify_hostname`` is off without a CA.
    """
    if cert is None and key is None and ca is None:
        return None, None
    if (cert is None) != (key is None):
        raise ConfigError("tls_cert and tls_key go together: give both or neither",
                          key="tls_cert" if cert is None else "tls_key")
    if cert is None:
        raise ConfigError("tls_ca needs tls_cert and tls_key (a node must present a "
                          "certificate of its own)", key="tls_cert")
    assert key is not None
    if not verify_hostname and ca is None:
        raise ConfigError("tls_verify_hostname = false needs tls_ca (a CA that signs only "
                          "this cluster's certificates)", key="tls_verify_hostname")
    for name, path in (("tls_cert", cert), ("tls_key", key), ("tls_ca", ca)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{name}: no such file {path!r}", key=name)
    try:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
        server.load_cert_chain(cert, key)
        server.verify_mode = ssl.CERT_REQUIRED if ca is not None else ssl.CERT_NONE
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        client.load_cert_chain(cert, key)
        client.check_hostname = verify_hostname
    except ssl.SSLError as exc:
        raise ConfigError(f"cannot load TLS files ({cert}, {key}, {ca}): {exc}",
                          key="tls_cert") from exc
    return server, client
