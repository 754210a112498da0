"""Throw-away TLS material made with the openssl CLI: a CA and a localhost server certificate."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_certs(folder: Path) -> None:
    def sh(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    sh("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
       "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    sh("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
       "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (folder / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    sh("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
       "-CAcreateserial", "-days", "1", "-extfile", "ext.cnf", "-out", "server.pem")  # fmt: skip
    sh("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=client",
       "-keyout", "client.key", "-out", "client.csr")  # fmt: skip
    sh("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
       "-CAcreateserial", "-days", "1", "-out", "client.pem")  # fmt: skip
