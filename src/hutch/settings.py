"""Settings, built once from arguments and the environment (prefix ``HUTCH_``).

Nothing reads settings at import time: the CLI builds a :class:`Settings` and passes it
down to the app factory, the store and the host agent.
"""

from __future__ import annotations

import os
from ipaddress import IPv4Network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hutch.build.env import parse_build_env
from hutch.core.catalog import DEFAULT_SHAPES, ROOTFS_CATALOG, Shape
from hutch.core.egress import DenySet, parse_cidr_list
from hutch.host.dns_upstream import parse_upstreams
from hutch.host.oci_ref import AllowedRegistry, parse_allowed_registries
from hutch.host.warm_pool import WarmEntry, parse_warm_pool

__all__ = ["Settings", "default_home"]


def default_home() -> Path:
    """``/var/lib/hutch`` for root (an operator's daemon), else the XDG data directory."""
    if os.geteuid() == 0:
        return Path("/var/lib/hutch")
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "hutch"


class Settings(BaseSettings):
    """Every knob of a hutch process. Environment variables are ``HUTCH_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="HUTCH_", frozen=True, extra="ignore")

    home: Path = Field(default_factory=default_home)
    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=0, le=65535)
    workers: int = Field(default=0, ge=0, le=256)
    """Control-plane workers (``hutch serve``, ``hutch control``); 0: one per core."""
    agent_wait_s: float = Field(default=15.0, gt=0, le=300)
    """How long an API worker holds a request while its host agent is away (restarting, or
    not started), before it answers 503 with ``Retry-After``."""
    database_url: str = ""
    """SQLAlchemy URL; empty means SQLite at ``$HUTCH_HOME/hutch.db``."""

    images_dir: Path | None = None
    """Where root filesystem images are built; empty means ``$HUTCH_HOME/images``."""

    shapes: tuple[Shape, ...] = DEFAULT_SHAPES
    default_rootfs: str = "devbox:1"

    driver: Literal["runc", "fake"] = "runc"
    """How sandboxes run: ``runc`` (isolated), or ``fake`` (plain processes, for tests)."""
    default_runtime: Literal["runc", "gvisor"] = "runc"
    """The runtime of a sandbox created without ``runtime`` (with ``driver=runc``)."""
    runsc: str = "runsc"
    """The gVisor runtime's binary (``HUTCH_RUNSC``): Debian's by default, or a current
    release's path. Its version, platforms and flags are read at start."""
    snapshot_store: str = ""
    """Where hibernated sandboxes' snapshots are kept: empty for this host's disk, or
    ``s3://bucket/prefix`` (with the endpoint and keys below) to free the host's disk too."""
    snapshot_store_endpoint: str = ""
    snapshot_store_access_key: str = ""
    snapshot_store_secret_key: SecretStr | None = None
    snapshot_store_region: str = "us-east-1"
    gvisor_platform: Literal["ptrace", "systrap", "kvm"] = "ptrace"
    """gVisor's platform; the runsc found must have it (Debian's 2022 build: ptrace, kvm)."""
    link_pool: IPv4Network = IPv4Network("10.89.0.0/16")
    """Addresses for the host-sandbox links, a /30 per sandbox. Must not clash with the
    host's own networks; two hutch instances on one machine need different pools."""
    network_pool: IPv4Network = IPv4Network("10.42.0.0/16")
    """Subnets for private networks, one of ``network_prefix`` per network, reused after a
    network is deleted. Must not clash with the host's networks or ``link_pool``."""
    network_prefix: int = Field(default=24, ge=16, le=29)
    egress_default: Literal["open", "closed"] = "open"
    """What a sandbox with no egress rules may reach: ``open`` (the internet, minus the
    platform deny set) or ``closed`` (nothing). ``["*"]`` is always open."""
    egress_deny: str = ""
    """More IPv4 blocks no sandbox may reach, comma-separated (added to the deny set)."""
    egress_allow_private: str = ""
    """Blocks carved out of the deny set's private entries (RFC 1918, 100.64.0.0/10,
    169.254.0.0/16), comma-separated: say an internal package mirror's 10.20.0.0/16."""
    bandwidth_quota_bytes: int = Field(default=5 * 1024**3, ge=-1)
    """Each new sandbox's outbound internet quota in bytes; -1 is unmetered."""
    bandwidth_flush_interval_s: float = Field(default=5.0, gt=0)
    """How often the kernel's traffic counters are written to the store."""
    dns_upstream: str = ""
    """The resolvers hutch's DNS server forwards sandboxes' queries to, comma-separated
    ``ip[:port]`` (``[ipv6]:port``); empty: the host's /etc/resolv.conf nameservers;
    ``none``: no forwarding (sandboxes resolve only their private networks' names)."""
    dns_upstream_timeout_s: float = Field(default=2.0, gt=0, le=30)
    """How long one forwarded query may wait for the upstreams, all tries included, before
    the sandbox gets SERVFAIL."""
    log_format: Literal["text", "json"] = "text"
    """Logs on stderr: ``text``, or ``json`` (one object a line, with the request's id, user
    and sandbox)."""
    metrics_addr: str = Field(
        default="", pattern=r"^(|(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):[0-9]{1,5})$"
    )
    """``host:port`` where Prometheus scrapes ``/metrics`` (an operator address, not the
    API's); empty: not served."""
    metrics_interval_s: float = Field(default=5.0, ge=0.2, le=300)
    """How often every running sandbox's CPU, memory, disk and traffic are sampled."""
    metrics_retention_s: float = Field(default=900.0, ge=1, le=86400)
    """How much of that history is kept (in the host agent's memory, 66 bytes a sample)."""
    webhook_allow_private: str = ""
    """Webhook receivers may be only on public addresses; these IPv4 blocks (comma-separated,
    say an internal receiver's 10.20.0.0/16, or 127.0.0.1/32) are allowed besides."""
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=60)
    """How long one delivery attempt may take in all (connect, send, the answer's status
    line and headers) before it counts as failed."""
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    """Tries per delivery; between them the wait doubles from ``webhook_retry_s``."""
    webhook_retry_s: float = Field(default=2.0, gt=0, le=3600)
    webhooks_per_user: int = Field(default=20, ge=0)
    event_retention_days: float = Field(default=30.0, gt=0)
    """Events, and finished webhook deliveries, older than this are deleted."""
    proxy_enabled: bool = True
    """Whether preview URLs work (an nginx is started for them); off, they answer 503."""
    proxy_host: str = "127.0.0.1"
    proxy_port: int = Field(default=8701, ge=0, le=65535)
    """Where preview URLs are served; 0 picks a free port."""
    public_proxy_port: int = Field(default=0, ge=0, le=65535)
    """The port preview and ingress URLs name; 0: the proxy's own. A cluster's agents and
    control planes set the public entry's (the control planes' port, or the load
    balancer's in front of them), which routes each URL to its sandbox's host."""
    preview_domain: str = "localhost"
    """Preview URLs are ``{port}-{token}.{preview_domain}``; ``*.localhost`` is loopback in
    browsers. A real deployment points a wildcard DNS name at the proxy."""
    preview_ttl_s: float = Field(default=3600, gt=0)
    """How long a preview URL works (``access_token_expires_at``)."""
    computer_screenshots_per_minute: int = Field(default=600, ge=1)
    """Screenshots of one desktop sandbox a minute (``…/computer/screenshot``); more is a
    429 with ``Retry-After``."""
    computer_connect_ttl_s: float = Field(default=300, gt=0, le=86400)
    """How long a noVNC link (``…/computer/screens/{id}/connect``) lets a viewer connect."""
    pay_to: str = ""
    """The wallet deploy payments go to; empty: paid deploys are off (402 cannot be paid)."""
    deploy_price_usd_per_month: float = Field(default=0.5, ge=0.5)
    apps_domain: str = "localhost"
    """Deployed projects are served at ``http://{uniqueName}.{apps_domain}`` by the proxy."""
    deploy_shape: str = ""
    """The shape of the sandbox a project is built and served in; empty means the first
    configured shape with at least 1 GiB of memory (else the largest)."""
    deploy_build_timeout_s: float = Field(default=900, gt=0)
    """How long a project's install and build commands may take together."""
    deploy_health_timeout_s: float = Field(default=60, gt=0)
    """How long a started app has to answer HTTP on its port before the deploy fails."""
    build_env: str = ""
    """Variables every deploy's install and build steps get (say a package mirror):
    ``NAME=value,NAME=value`` (a comma starts a pair only before ``NAME=``) or a JSON
    object of strings; see :mod:`hutch.build.env`."""
    template_registry_auth_file: Path | None = None
    """Credentials for the allowed registries: a containers ``auth.json`` (what ``skopeo
    login --authfile FILE`` writes; a Docker ``config.json`` works too). Every pull uses
    it; empty: pulls are anonymous."""
    image_import_max_bytes: int = Field(default=10 * 1024**3, ge=1024 * 1024)
    """The largest image an import pulls: its compressed layers (checked before pulling),
    and what it unpacks to; over it the import fails with that reason."""
    template_registries: str = ""
    """The OCI registries images may be pulled from (``hutch images import``, a template's
    ``FROM registry/repo:tag``), comma-separated ``host[:port][/path-prefix]``; an entry
    starting ``http://`` is spoken to over plain HTTP (a loopback mirror). Empty: none, so
    every registry is refused. See :mod:`hutch.host.oci_import`."""
    deploy_max_body_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    """The largest ``POST /agent/deploy`` request (files or zip, base64, and the rest)."""
    deploy_max_unpacked_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    """The most an upload may unpack to (a zip bomb is refused before it is unpacked)."""
    template_max_context_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    """The largest build context a template takes (the archive, and what it unpacks to)."""
    template_builds_per_user: int = Field(default=2, ge=1)
    """Template builds one user runs at once; more wait in ``pending``."""
    template_max_per_user: int = Field(default=100, ge=1)
    """Templates (every version not deleted) one user may have; more are a 403."""
    template_max_bytes: int = Field(default=10 * 1024**3, ge=1024 * 1024)
    """The most a template's own layers may hold; a build past it fails."""
    template_build_timeout_s: float = Field(default=1800, gt=0)
    """How long one template build (every step) may take."""
    template_build_shape: str = ""
    """The shape of a template build's sandboxes; empty: as ``deploy_shape``."""
    agent_requests_per_minute: int = Field(default=30, ge=1)
    """Requests per minute per (client IP, wallet) on /agent; more get a 429."""
    agent_requests_per_minute_per_address: int = Field(default=120, ge=1)
    """Requests per minute per client IP on /agent, whatever wallet they name (the wallet
    header is not yet verified when the limit is counted)."""
    chain_arbitrum_rpc_url: str = ""
    chain_arbitrum_usdc: str = "0xaf88d065e77c8cC2239327C5EDb3A432268e5831"
    chain_arbitrum_usdt: str = "0xFd086bC7CD5C481DCC9C85ebE478A1C0b69FCbb9"
    chain_arbitrum_confirmations: int = Field(default=1, ge=0)
    chain_arbitrum_chain_id: int = 42161
    chain_base_rpc_url: str = ""
    chain_base_usdc: str = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    chain_base_usdt: str = "0xfde4C96c8593536E31F229EA8f37b2ADa2699bb2"
    chain_base_confirmations: int = Field(default=1, ge=0)
    chain_base_chain_id: int = 8453
    disks_enabled: bool = True
    """Whether the disk routes work; off, they answer 503."""
    disk_master_key: SecretStr | None = None
    """The AES-256 key that seals disk credentials, 32 bytes in base64; empty means the key
    file ``$HUTCH_HOME/master.key``, made (mode 0600) at first start."""
    disk_check_interval_s: float = Field(default=30.0, gt=0)
    """How often every mounted disk is looked at (``mount_status`` follows)."""
    pids_limit: int = Field(default=1024, ge=16)
    exec_default_timeout_s: float = Field(default=300, gt=0)
    exec_max_timeout_s: float = Field(default=3600, gt=0)
    exec_output_cap_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    files_max_bytes: int = Field(default=500 * 1024 * 1024, ge=1)
    """The largest file one upload (``PUT …/files``) may write (CreateOS: 500 MB)."""
    monitor_interval_s: float = Field(default=2.0, gt=0)
    warm_pool: str = ""
    """Sandboxes kept prepared per (runtime, image, shape), ``[runtime:]image:shape=count``
    comma-separated (``devbox:1:s-1vcpu-256mb=4,gvisor:devbox:1:s-1vcpu-256mb=2``; no
    runtime: runc); empty: no warm pool (hutch.host.warm_pool)."""

    max_running_per_user: int = Field(default=50, ge=1)
    max_disk_mib: int = Field(default=1024 * 1024, ge=256)
    """The largest writable disk a sandbox may have, at create or by resize (MiB)."""
    sandbox_max_timeout_s: float = Field(default=7 * 24 * 3600, gt=0)
    """The longest a sandbox may be given to live (Nullspace's ``timeout_ms``)."""
    max_json_body_bytes: int = Field(default=1024 * 1024, ge=1024)

    host_id: str = ""
    """This machine's id in ``/v1/hosts``; empty means its first global IPv4 address."""
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    host_dead_after_s: float = Field(default=30.0, gt=0)
    region: str = Field(default="local", min_length=1, max_length=64)
    """This deployment's region: a sandbox's ``region``, and the only one create accepts."""
    host_labels: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """This host's placement labels, ``k=v,k2=v2``; a create's ``node_selector`` must match
    them all (shown in ``/v1/hosts``)."""
    control_url: str = ""
    """``hutch agent --control URL``: the control plane this agent joins (cluster mode:
    it registers there with ``join_token``, heartbeats there, and serves on
    ``agent_listen`` over TCP). Empty: the one-machine agent of ``hutch serve``."""
    join_token: SecretStr | None = None
    """``hutch agent --token T``: a join token from ``hutch hosts token create``."""
    agent_listen: str = "127.0.0.1:8702"
    """``host:port`` a cluster agent serves the control plane on (its token required)."""
    agent_url: str = ""
    """The URL the control plane reaches this agent at; empty: ``http://`` + ``agent_listen``."""
    cluster: bool = False
    """``hutch control`` of a cluster: creates are placed on registered hosts and every
    sandbox's requests go to its host's agent over TCP (needs PostgreSQL)."""
    tls_cert: Path | None = None
    """A cluster's TLS (with ``tls_key`` and ``tls_ca``, all or none): this process's
    certificate (PEM), served by an agent and a cluster's control plane and presented by
    each to the other."""
    tls_key: Path | None = None
    """The private key of ``tls_cert`` (PEM)."""
    tls_ca: Path | None = None
    """The CA (PEM) the peers' certificates must be signed by: agents require the control
    plane's client certificate, and each checks the other's against it."""
    cpu_overcommit: float = Field(default=4.0, gt=0, le=64)
    """Placement lets a host's sandboxes have this many vCPUs per core of the host."""
    host_capacity_mib: int = Field(default=0, ge=0)
    """Memory this host offers sandboxes (MiB); 0: the machine's total."""
    auto_pause_min_s: int = Field(default=60, ge=1)
    """The shortest ``auto_pause_after_seconds`` accepted (CreateOS: 60; up to 86400)."""

    db_timeout_s: float = Field(default=3.0, gt=0)
    """How long a readiness probe or a connection attempt waits for the database."""
    db_lock_wait_s: float = Field(default=30.0, gt=0)
    """SQLite: how long a write waits for other processes' writes before it gives up (a 503)."""
    db_max_connections: int = Field(default=20, ge=2, le=10_000)
    """PostgreSQL: the most connections one process (an API or control worker, an agent)
    holds at once; a burst past them waits for one to come back. Every process of a
    cluster holds its own: keep their sum below the server's ``max_connections``."""

    @field_validator("snapshot_store")
    @classmethod
    def _snapshot_store_url(cls, value: str) -> str:
        if value and not (value.startswith("s3://") and len(value) > len("s3://")):
            raise ValueError("HUTCH_SNAPSHOT_STORE must be empty or s3://bucket/prefix")
        return value

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("host_labels", mode="before")
    @classmethod
    def _parse_labels(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        labels: dict[str, str] = {}
        for item in value.split(","):
            if not item.strip():
                continue
            key, sep, label = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"host_labels: {item.strip()!r} is not key=value")
            labels[key.strip()] = label.strip()
        return labels

    @model_validator(mode="after")
    def _check_catalog(self) -> Settings:
        ids = [shape.id for shape in self.shapes]
        if not ids:
            raise ValueError("at least one shape must be configured")
        if len(set(ids)) != len(ids):
            raise ValueError("shape ids must be unique")
        if self.link_pool.prefixlen > 28:
            raise ValueError("link_pool must be a /28 or larger")
        if self.network_prefix < self.network_pool.prefixlen:
            raise ValueError("network_prefix must not be shorter than network_pool's prefix")
        if self.network_pool.overlaps(self.link_pool):
            raise ValueError("network_pool and link_pool must not overlap")
        if self.deploy_shape and self.deploy_shape not in ids:
            raise ValueError(f"deploy_shape must be one of {ids}")
        if self.template_build_shape and self.template_build_shape not in ids:
            raise ValueError(f"template_build_shape must be one of {ids}")
        tls = (self.tls_cert, self.tls_key, self.tls_ca)
        if any(tls) and not all(tls):
            raise ValueError("HUTCH_TLS_CERT, HUTCH_TLS_KEY and HUTCH_TLS_CA go together")
        _ = self.deny_set  # the egress settings parse, or this raises
        _ = self.webhook_allowed_networks
        _ = self.build_env_vars
        _ = self.template_registry_list
        if self.dns_upstream.strip() != "none":
            parse_upstreams(self.dns_upstream)  # ValueError names the bad entry
        names = {image.name for image in ROOTFS_CATALOG}
        if self.default_rootfs not in names:
            raise ValueError(f"default_rootfs must be one of {sorted(names)}")
        _ = self.warm_pool_entries
        return self

    @property
    def warm_pool_entries(self) -> tuple[WarmEntry, ...]:
        """``warm_pool`` parsed (ValueError names a bad entry)."""
        return parse_warm_pool(
            self.warm_pool, shapes=self.shapes, images=[image.name for image in ROOTFS_CATALOG]
        )

    @property
    def webhook_allowed_networks(self) -> list[IPv4Network]:
        return parse_cidr_list(self.webhook_allow_private, setting="webhook_allow_private")

    @property
    def deny_set(self) -> DenySet:
        """The platform egress deny set from the pools and the egress settings."""
        return DenySet(
            link_pool=self.link_pool,
            network_pool=self.network_pool,
            extra=parse_cidr_list(self.egress_deny, setting="egress_deny"),
            allow_private=parse_cidr_list(
                self.egress_allow_private, setting="egress_allow_private"
            ),
        )

    @property
    def build_env_vars(self) -> dict[str, str]:
        """``build_env`` parsed (ValueError if it does not parse)."""
        return parse_build_env(self.build_env)

    @property
    def template_registry_list(self) -> tuple[AllowedRegistry, ...]:
        """``template_registries`` parsed (ValueError names a bad entry)."""
        return parse_allowed_registries(self.template_registries)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'hutch.db'}"

    @property
    def resolved_deploy_shape(self) -> str:
        if self.deploy_shape:
            return self.deploy_shape
        roomy = [shape for shape in self.shapes if shape.mem_mib >= 1024]
        return (roomy[0] if roomy else max(self.shapes, key=lambda s: s.mem_mib)).id

    @property
    def resolved_template_build_shape(self) -> str:
        return self.template_build_shape or self.resolved_deploy_shape

    @property
    def images_path(self) -> Path:
        return self.images_dir or self.home / "images"

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
