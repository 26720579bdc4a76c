"""The Python SDK for hutch (and any server speaking the CreateOS sandbox API).

    from hutch import Sandbox

    with Sandbox.create() as sandbox:
        print(sandbox.commands.run("uname -a").stdout)
        sandbox.files.write("/tmp/hello.txt", "hi")

The async API (``AsyncSandbox``, ``AsyncNetwork``, ``AsyncDisk``, ``AsyncTemplate``,
``AsyncClient``) is the implementation; the blocking one (``Sandbox``, ``Network``,
``Disk``, ``Template``, ``Client``) runs it
on a private event loop. The URL and key come from arguments, else ``HUTCH_API_URL`` and
``HUTCH_API_KEY``; every error is a :class:`~hutch.sdk.errors.HutchError`.
"""

from hutch.sdk._config import DEFAULT_API_URL, ClientConfig, RetryPolicy
from hutch.sdk.client import AsyncClient
from hutch.sdk.commands import (
    AsyncCommands,
    CommandEvent,
    CommandResult,
    ErrorEvent,
    ExecOptions,
    ExitEvent,
    OutputEvent,
)
from hutch.sdk.computer import AsyncComputer, Computer, ScreenInfo, ScreenLink
from hutch.sdk.disks import AsyncDisk, DiskAttachment, DiskInfo, DiskMount
from hutch.sdk.egress import AsyncEgress, Bandwidth
from hutch.sdk.errors import (
    AuthenticationError,
    CommandError,
    ConfigurationError,
    ConflictError,
    HutchError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    RequestTimeoutError,
    ServerUnavailableError,
    StreamError,
)
from hutch.sdk.files import AsyncFiles
from hutch.sdk.networks import AsyncNetwork, NetworkInfo, NetworkMember
from hutch.sdk.observe import (
    AsyncWebhook,
    Delivery,
    Event,
    MetricsSample,
    Webhook,
    WebhookInfo,
    async_events,
    async_follow_events,
    events,
    follow_events,
)
from hutch.sdk.processes import (
    AsyncProcesses,
    ProcessEvent,
    ProcessExited,
    ProcessInfo,
    ProcessOutput,
    ProcessOutputLost,
)
from hutch.sdk.sandbox import AsyncSandbox, SandboxInfo, SandboxOptions
from hutch.sdk.sync import Client, Commands, Disk, Egress, Files, Network, Processes, Sandbox
from hutch.sdk.templates import (
    AsyncTemplate,
    Template,
    TemplateBuildError,
    TemplateInfo,
    TemplateLogEvent,
)

__all__ = [
    "DEFAULT_API_URL",
    "AsyncClient",
    "AsyncCommands",
    "AsyncComputer",
    "AsyncDisk",
    "AsyncEgress",
    "AsyncFiles",
    "AsyncNetwork",
    "AsyncProcesses",
    "AsyncSandbox",
    "AsyncTemplate",
    "AsyncWebhook",
    "AuthenticationError",
    "Bandwidth",
    "Client",
    "ClientConfig",
    "CommandError",
    "CommandEvent",
    "CommandResult",
    "Commands",
    "Computer",
    "ConfigurationError",
    "ConflictError",
    "Delivery",
    "Disk",
    "DiskAttachment",
    "DiskInfo",
    "DiskMount",
    "Egress",
    "ErrorEvent",
    "Event",
    "ExecOptions",
    "ExitEvent",
    "Files",
    "HutchError",
    "InvalidRequestError",
    "MetricsSample",
    "Network",
    "NetworkInfo",
    "NetworkMember",
    "NotFoundError",
    "OutputEvent",
    "ProcessEvent",
    "ProcessExited",
    "ProcessInfo",
    "ProcessOutput",
    "ProcessOutputLost",
    "Processes",
    "RateLimitError",
    "RequestTimeoutError",
    "RetryPolicy",
    "Sandbox",
    "SandboxInfo",
    "SandboxOptions",
    "ScreenInfo",
    "ScreenLink",
    "ServerUnavailableError",
    "StreamError",
    "Template",
    "TemplateBuildError",
    "TemplateInfo",
    "TemplateLogEvent",
    "Webhook",
    "WebhookInfo",
    "async_events",
    "async_follow_events",
    "events",
    "follow_events",
]
