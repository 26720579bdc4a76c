"""The services one running app holds, built in its lifespan and handed to routes."""

from __future__ import annotations

from dataclasses import dataclass

from hutch.core.access_tokens import AccessTokenService
from hutch.core.computer_screens import ComputerService
from hutch.core.deploys import DeployService
from hutch.core.disks import DiskService
from hutch.core.egress_service import EgressService
from hutch.core.events import EventService
from hutch.core.hosts import HostService
from hutch.core.identity import IdentityService
from hutch.core.metrics import MetricsService
from hutch.core.networks import NetworkService
from hutch.core.previews import PreviewService
from hutch.core.processes import ProcessService
from hutch.core.ratelimit import RateLimiter
from hutch.core.sandboxes import SandboxService
from hutch.core.shells import ShellService
from hutch.core.snapshots import SnapshotService
from hutch.core.ssh import SshService
from hutch.core.templates.service import TemplateService
from hutch.core.tunnels import TunnelService
from hutch.core.wallets import WalletAuth
from hutch.core.webhooks import WebhookService
from hutch.host.agent import HostAgent
from hutch.settings import Settings
from hutch.store.db import Database

__all__ = ["Services"]


@dataclass(frozen=True, kw_only=True)
class Services:
    settings: Settings
    db: Database
    identity: IdentityService
    access_tokens: AccessTokenService
    hosts: HostService
    host_agent: HostAgent
    sandboxes: SandboxService
    egress: EgressService
    processes: ProcessService
    shells: ShellService
    ssh: SshService
    tunnels: TunnelService
    networks: NetworkService
    disks: DiskService
    previews: PreviewService
    deploys: DeployService
    templates: TemplateService
    snapshots: SnapshotService
    wallets: WalletAuth
    events: EventService
    metrics: MetricsService
    webhooks: WebhookService
    agent_rate: RateLimiter
    agent_address_rate: RateLimiter
    computer: ComputerService | None = None
    """Computer use (desktop sandboxes); None where the sandboxes are not run (a worker,
    which passes those routes to the agent)."""
