"""The cluster's wire (issue 19): TLS between the control plane and its agents
(``HUTCH_TLS_*``), with certificates made here, on a two-host cluster of network
namespaces (``tests/support/cluster.py``) running real runc sandboxes on PostgreSQL.
One cluster serves the whole module."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.sync.client import connect as ws_connect

from tests.e2e.test_cluster_runc import destroy_all
from tests.e2e.test_wake_on_traffic import serve_app
from tests.support.cluster import Cluster
from tests.support.postgres import free_port
from tests.support.server import _env

SHAPE = "s-1vcpu-256mb"

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="network namespaces")


# -- certificates, made by the test ------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A CA and one certificate it signed (for every address given), as PEM files."""

    ca: Path
    cert: Path
    key: Path

    def env(self) -> dict[str, str]:
        return {"HUTCH_TLS_CERT": str(self.cert), "HUTCH_TLS_KEY": str(self.key),
                "HUTCH_TLS_CA": str(self.ca)}  # fmt: skip

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        return context


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))  # fmt: skip
    path.chmod(0o600)


def make_pki(directory: Path, name: str, addresses: list[IPv4Address]) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name(f"{name} CA")).issuer_name(_name(f"{name} CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(str(a)))
                                    for a in addresses]  # fmt: skip
    cert = (
        x509.CertificateBuilder().subject_name(_name(f"{name} member")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                              x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pki = Pki(ca=directory / "ca.pem", cert=directory / "cert.pem", key=directory / "key.pem")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, pki.key)
    return pki


class TlsCluster(Cluster):
    """The test cluster with HUTCH_TLS_* on the control plane and every agent: one CA,
    one certificate naming the control plane's and every agent's address."""

    pki: Pki

    def _network(self, hosts: dict[str, dict[str, str]]) -> None:
        super()._network(hosts)
        addresses = [self.gateway, *(host.address for host in self.hosts.values())]
        self.pki = make_pki(self.root / "pki", "cluster", addresses)
        for host in self.hosts.values():
            host.env.update(self.pki.env())

    def _control_env(self) -> dict[str, str]:
        return {**super()._control_env(), **self.pki.env()}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-Api-Key": self.key}, timeout=60,
                            verify=self.pki.client_context())  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[TlsCluster]:
    # The hosts' proxies serve previews, reached through the control plane's port.
    entry = free_port()
    public = {"HUTCH_PUBLIC_PROXY_PORT": str(entry)}
    proxy = {"HUTCH_PROXY_ENABLED": "true", "HUTCH_PROXY_HOST": "0.0.0.0", **public}
    started = TlsCluster(tmp_path_factory.mktemp("wire"), images, {"h1": proxy, "h2": proxy},
                         control_env=public, control_port=entry)  # fmt: skip
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def api(cluster: TlsCluster) -> Iterator[httpx.Client]:
    with cluster.client() as client:
        yield client


def in_host(cluster: Cluster, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """A command in host ``name``'s network namespace."""
    return subprocess.run(["nsenter", f"--net=/run/netns/{cluster.hosts[name].netns}", *argv],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


# -- TLS ---------------------------------------------------------------------------------


def test_a_tls_cluster_serves_creates_execs_streams_and_websockets(
    cluster: TlsCluster, api: httpx.Client
) -> None:
    """Agents joined over https and are reached over https; a sandbox on each host
    answers an exec, a streamed exec, a file and a WebSocket shell through the control
    plane."""
    assert cluster.url.startswith("https://")
    listed = cluster.cli("hosts", "ls").stdout  # where the control plane reaches each agent
    for host in cluster.hosts.values():
        assert f"https://{host.address}:8702" in listed, listed
    try:
        for name in ("h1", "h2"):
            made = api.post("/v1/sandboxes", json={"shape": SHAPE, "host_id": name,
                                                   "envs": {"HOST": name}})  # fmt: skip
            assert made.status_code == 201, made.text
            box = made.json()["data"]
            ran = api.post(f"/v1/sandboxes/{box['id']}/exec", json={"cmd": "echo $HOST"})
            assert ran.status_code == 200, ran.text
            assert ran.json()["data"]["result"]["stdout"] == f"{name}\n"
            streamed = api.post(f"/v1/sandboxes/{box['id']}/exec", params={"stream": "true"},
                                json={"cmd": "for i in 1 2 3; do echo $i; done"})  # fmt: skip
            frames = [json.loads(line) for line in streamed.text.splitlines() if line]
            assert "".join(f.get("stdout", "") for f in frames) == "1\n2\n3\n"
            assert frames[-1] == {"exit_code": 0}
            payload = bytes(range(256)) * 1024
            put = api.put(f"/v1/sandboxes/{box['id']}/files", params={"path": "/tmp/blob"},
                          content=payload)  # fmt: skip
            assert put.status_code in (200, 201, 204), put.text
            got = api.get(f"/v1/sandboxes/{box['id']}/files", params={"path": "/tmp/blob"})
            assert got.content == payload
            url = cluster.url.replace("https://", "wss://") + f"/v1/sandboxes/{box['id']}/shell-ws"
            output = b""
            with ws_connect(url, additional_headers={"X-Api-Key": cluster.key},
                            ssl=cluster.pki.client_context()) as ws:  # fmt: skip
                ws.send(b"echo over-$HOST; exit 3\n")
                while True:
                    message = ws.recv(timeout=60)
                    if isinstance(message, bytes):
                        output += message
                        continue
                    assert json.loads(message)["exit_code"] == 3
                    break
            assert f"over-{name}".encode() in output
    finally:
        destroy_all(api)


def _curl(cluster: TlsCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """curl to h1's agent from h2's namespace (a machine of the cluster's network)."""
    url = f"https://{cluster.hosts['h1'].address}:8702/v1/shapes"
    return in_host(cluster, "h2", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                   "--max-time", "20", *args, url)  # fmt: skip


def test_an_agent_refuses_plaintext_strangers_and_peers_without_its_token(
    cluster: TlsCluster,
) -> None:
    agent = cluster.hosts["h1"]
    plain = in_host(cluster, "h2", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                    "--max-time", "20", f"http://{agent.address}:8702/v1/shapes")  # fmt: skip
    assert plain.stdout in ("", "000"), plain  # no HTTP answer at all: the port speaks TLS
    # TLS without a client certificate: refused at the handshake.
    no_cert = _curl(cluster, "--cacert", str(cluster.pki.ca))
    assert no_cert.returncode != 0 and no_cert.stdout in ("", "000"), no_cert
    # A client certificate from another CA: refused as well.
    other = make_pki(cluster.root / "other-pki", "other", [agent.address, cluster.gateway])
    stranger = _curl(cluster, "--cacert", str(cluster.pki.ca), "--cert", str(other.cert),
                     "--key", str(other.key))  # fmt: skip
    assert stranger.returncode != 0 and stranger.stdout in ("", "000"), stranger
    # The cluster's own certificate gets through TLS, and then still needs the host token.
    member = _curl(cluster, "--cacert", str(cluster.pki.ca), "--cert", str(cluster.pki.cert),
                   "--key", str(cluster.pki.key))  # fmt: skip
    assert member.stdout == "401", member


def _join(cluster: TlsCluster, name: str, control: str, env: dict[str, str]) -> str:
    """What ``hutch agent`` says when it tries to join ``control`` (it must fail)."""
    tried = subprocess.run(
        [sys.executable, "-m", "hutch", "agent", "--control", control, "--token", cluster.token,
         "--listen", "127.0.0.1:0"],
        env=_env(cluster.root / name, {"HUTCH_DATABASE_URL": cluster.database_url, **env}),
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert tried.returncode != 0, tried
    return tried.stdout + tried.stderr


def test_agents_with_a_wrong_ca_or_no_tls_are_refused_with_the_reason(
    cluster: TlsCluster,
) -> None:
    other = make_pki(cluster.root / "other-agent", "other", [IPv4Address("127.0.0.1")])
    said = _join(cluster, "wrong-ca", cluster.url, other.env())
    assert "certificate is not trusted" in said and "HUTCH_TLS_CA" in said, said
    said = _join(cluster, "plaintext-url", cluster.url.replace("https://", "http://"),
                 cluster.pki.env())  # fmt: skip
    assert "--control must be the control plane's https:// URL" in said, said
    # An agent without TLS: it cannot check the control plane's certificate (not signed
    # by any CA it knows), and the control plane would not reach it over plain HTTP.
    said = _join(cluster, "no-tls", cluster.url, {})
    assert "certificate is not trusted" in said, said
    # Nor does the control plane take an agent that would serve plain HTTP.
    with httpx.Client(verify=cluster.pki.client_context(), timeout=30) as client:
        refused = client.post(
            f"{cluster.url}/internal/v1/hosts/join",
            json={"id": "plain", "address": "http://10.0.0.9:8702"},
            headers={"Authorization": f"Bearer {cluster.token}"},
        )
    assert refused.status_code == 400, refused.text
    assert "this cluster uses TLS" in refused.json()["data"]["address"]
    assert "plain" not in cluster.hosts_view()
    # Nor a heartbeat, with a good host token, that would move a joined agent to a plain
    # HTTP address (every heartbeat writes the address the control plane reaches it at).
    with httpx.Client(verify=cluster.pki.client_context(), timeout=30) as client:
        joined = client.post(
            f"{cluster.url}/internal/v1/hosts/join",
            json={"id": "tls-then-plain", "address": "https://10.0.0.9:8702"},
            headers={"Authorization": f"Bearer {cluster.token}"},
        )
        assert joined.status_code == 200, joined.text
        host_token = joined.json()["data"]["host_token"]
        try:
            moved = client.post(
                f"{cluster.url}/internal/v1/hosts/tls-then-plain/heartbeat",
                json={"id": "tls-then-plain", "address": "http://10.0.0.9:8702"},
                headers={"Authorization": f"Bearer {host_token}"},
            )
            assert moved.status_code == 400, moved.text
            assert "this cluster uses TLS" in moved.json()["data"]["address"]
            listed = cluster.cli("hosts", "ls").stdout
            assert "https://10.0.0.9:8702" in listed and "http://10.0.0.9" not in listed, listed
        finally:
            cluster.cli("hosts", "rm", "tls-then-plain")


def test_with_tls_preview_and_ingress_urls_are_https_at_the_control_plane(
    cluster: TlsCluster, api: httpx.Client
) -> None:
    """The public entry is the control plane's port, which speaks TLS here: the URLs say
    https, and a request there reaches the app of a sandbox on h2."""
    try:
        made = api.post("/v1/sandboxes", json={"shape": SHAPE, "host_id": "h2",
                                               "ingress_enabled": True})  # fmt: skip
        assert made.status_code == 201, made.text
        box = made.json()["data"]
        serve_app(api, box, "hello over tls")
        template = box["ingress_url_template"]
        assert template.startswith("https://<port>-") and template.endswith(
            f":{cluster.control_port}/"
        ), template
        host = template.replace("<port>", "8080").split("//", 1)[1].split(":")[0]
        with httpx.Client(verify=cluster.pki.client_context(), timeout=60) as client:
            answer = client.get(f"https://{cluster.gateway}:{cluster.control_port}/",
                                headers={"Host": host})  # fmt: skip
        assert answer.status_code == 200 and answer.text == "hello over tls", answer.text
    finally:
        destroy_all(api)


@pytest.mark.parametrize("form", [[], ["--one-process"]])
def test_a_server_outside_a_cluster_refuses_tls_settings_it_would_ignore(
    tmp_path: Path, form: list[str]
) -> None:
    """HUTCH_TLS_* secures a cluster's parts; a plain ``hutch serve`` would speak HTTP
    with them set, so it refuses to start and says why, before it binds or makes a key."""
    pki = make_pki(tmp_path / "pki", "one", [IPv4Address("127.0.0.1")])
    done = subprocess.run(
        [sys.executable, "-m", "hutch", "serve", "--port", "0", *form],
        env=_env(tmp_path / "home", pki.env()), capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "plain HTTP" in done.stderr and "TLS proxy" in done.stderr, done.stderr
    assert "could not serve" not in done.stderr, done.stderr
    assert "admin API key" not in done.stdout, done.stdout
