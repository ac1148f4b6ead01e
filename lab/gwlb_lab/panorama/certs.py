"""A private CA and a server certificate for the local Panorama, made with the ``openssl`` binary.

Clients verify the local Panorama exactly as they verify a real one with a private CA: they are
given ``ca.pem`` (``PANORAMA_CA_FILE``), and the server certificate names the addresses it is
reached at (subjectAltName). Keys are EC P-256, valid for a week, private to the owner.
"""

from __future__ import annotations

import ipaddress
import shutil
import socketserver
import ssl
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

VALID_DAYS = 7
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", str(VALID_DAYS)]


@dataclass(frozen=True)
class Certificates:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _san(hosts: Sequence[str]) -> str:
    names = []
    for host in hosts:
        try:
            ipaddress.ip_address(host)
            names.append(f"IP:{host}")
        except ValueError:
            names.append(f"DNS:{host}")
    return "subjectAltName=" + ",".join(names)


def make_certificates(directory: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> Certificates:
    """Write ca.pem, ca.key, server.pem, server.key into ``directory`` (created if missing)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the local Panorama needs the openssl binary (Debian: apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key = directory / "server.pem", directory / "server.key"
    _run(
        [
            openssl,
            "req",
            "-x509",
            *_EC,
            "-subj",
            "/CN=gwlb-fleet lab CA",
            "-keyout",
            str(ca_key),
            "-out",
            str(ca),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]
    )
    _run(
        [
            openssl,
            "req",
            "-x509",
            *_EC,
            "-subj",
            "/CN=panorama.lab",
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-addext",
            _san(hosts),
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ]
    )
    for private in (ca_key, key):
        private.chmod(0o600)
    return Certificates(ca, cert, key)


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl failed: {done.stderr.strip()[-500:]}")


def tls_server_context(certificates: Certificates) -> ssl.SSLContext:
    """A server context for the lab's HTTPS endpoints: TLS 1.2 at least (what set-up's profiles
    ask for), the lab CA's server certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificates.cert_file, certificates.key_file)
    return context


def serve_in_thread(server: socketserver.BaseServer, name: str) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True)
    thread.start()
    return thread


def stop_serving(server: socketserver.BaseServer | None, thread: threading.Thread | None) -> None:
    if server is None:
        return
    server.shutdown()
    server.server_close()
    if thread is not None:
        thread.join(timeout=5)
