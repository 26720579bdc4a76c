"""The blocking API: thin wrappers that run the async implementation on a private loop.

Each :class:`Client` owns an event loop on a daemon thread; every blocking call submits
the async call there and waits. Output callbacks given to ``commands.run`` therefore run
on that thread: keep them quick, and do not call the SDK from inside them (that raises
rather than deadlocks).
"""

from __future__ import annotations

import asyncio
import builtins
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Generic, Self, TypeVar, Unpack

from hutch.sdk._config import ClientConfig, RetryPolicy
from hutch.sdk._http import Identified
from hutch.sdk._resource import AsyncResource
from hutch.sdk.client import AsyncClient
from hutch.sdk.commands import (
    AsyncCommands,
    CommandEvent,
    CommandResult,
    ExecOptions,
    OutputCallback,
)
from hutch.sdk.computer import Computer
from hutch.sdk.disks import AsyncDisk, DiskAttachment, DiskInfo
from hutch.sdk.egress import AsyncEgress, Bandwidth
from hutch.sdk.errors import HutchError
from hutch.sdk.files import AsyncFiles, FileSource
from hutch.sdk.networks import AsyncNetwork, NetworkInfo, NetworkMember
from hutch.sdk.processes import AsyncProcesses, ProcessEvent, ProcessInfo
from hutch.sdk.sandbox import AsyncSandbox, SandboxInfo, SandboxOptions

if TYPE_CHECKING:
    from hutch.sdk.observe import MetricsSample
    from hutch.sdk.templates import Template

__all__ = ["Client", "Commands", "Disk", "Egress", "Files", "Network", "Processes", "Sandbox"]

T = TypeVar("T")
AioT = TypeVar("AioT")
ResourceT = TypeVar("ResourceT", bound=AsyncResource[Any])


class _Loop:
    """An event loop running forever on a daemon thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="hutch-sdk-loop", daemon=True
        )
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._loop.is_closed()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise HutchError(
                "the blocking SDK was called from its own I/O thread (from an output "
                "callback?); collect what you need there and act after run() returns"
            )
        if self.closed:
            coroutine.close()
            raise HutchError("this Client is closed; make a new one")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # interrupted while waiting (Ctrl-C): stop the call as well
            raise

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        """``iterator`` as a blocking iterator; closing it early closes ``iterator``."""
        try:
            while next_one := self.run(_next(iterator)):
                yield next_one[0]
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None and not self.closed:
                self.run(aclose())

    def close(self) -> None:
        if not self.closed:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()


async def _next(iterator: AsyncIterator[T]) -> tuple[T] | tuple[()]:
    """The next item in a 1-tuple, or ``()`` at the end (StopAsyncIteration cannot cross
    into a future)."""
    try:
        return (await anext(iterator),)
    except StopAsyncIteration:
        return ()


_shared: dict[ClientConfig, Client] = {}
_shared_lock = threading.Lock()


class Client:
    """A blocking connection to one hutch server; see :class:`~hutch.sdk.AsyncClient` for
    where the URL and key come from. ``aio`` is the async client it drives.

    Calls made without ``client=`` share one client per URL and key (:meth:`shared`),
    which lives as long as the process.
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        config: ClientConfig | None = None,
    ) -> None:
        self.aio = AsyncClient(api_url, api_key, timeout_s=timeout_s, retry=retry, config=config)
        self._loop = _Loop()

    @property
    def config(self) -> ClientConfig:
        return self.aio.config

    @classmethod
    def shared(cls, api_url: str | None = None, api_key: str | None = None) -> Client:
        config = ClientConfig.resolve(api_url=api_url, api_key=api_key)
        with _shared_lock:
            client = _shared.get(config)
            if client is None or client._loop.closed:
                client = _shared[config] = cls(config=config)
            return client

    def close(self) -> None:
        """Release the connection and stop the loop thread; the client cannot be used after."""
        if not self._loop.closed:
            self._loop.run(self.aio.aclose())
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.config.api_url!r})"


def _client(client: Client | None, api_url: str | None, api_key: str | None) -> Client:
    if client is not None:
        if api_url is not None or api_key is not None:
            raise TypeError("pass either client= or api_url=/api_key=, not both")
        return client
    return Client.shared(api_url, api_key)


class _Blocking(Generic[AioT]):
    """A blocking face on the async object ``aio``: each call runs on the client's loop."""

    def __init__(self, aio: AioT, client: Client) -> None:
        self.aio = aio
        self._loop = client._loop

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coroutine)

    @classmethod
    def _open(
        cls,
        call: Callable[[AsyncClient], Coroutine[Any, Any, AioT]],
        client: Client | None,
        api_url: str | None,
        api_key: str | None,
    ) -> Self:
        """Pick the client, run ``call`` with its async one and wrap what that returns."""
        client = _client(client, api_url, api_key)
        return cls(client._loop.run(call(client.aio)), client)

    @classmethod
    def _open_all(
        cls,
        call: Callable[[AsyncClient], Coroutine[Any, Any, builtins.list[AioT]]],
        client: Client | None,
        api_url: str | None,
        api_key: str | None,
    ) -> builtins.list[Self]:
        """:meth:`_open` for a call that returns a list."""
        client = _client(client, api_url, api_key)
        return [cls(aio, client) for aio in client._loop.run(call(client.aio))]


class _BlockingResource(_Blocking[ResourceT]):
    """A blocking sandbox, network or disk."""

    @property
    def id(self) -> str:
        return self.aio.id

    @property
    def name(self) -> str:
        return self.aio.name


class Commands(_Blocking[AsyncCommands]):
    """Blocking ``sandbox.commands``; see :class:`~hutch.sdk.commands.AsyncCommands`."""

    def run(
        self,
        cmd: str | Sequence[str],
        *,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        check: bool = False,
        **options: Unpack[ExecOptions],
    ) -> CommandResult:
        return self._run(
            self.aio.run(cmd, on_stdout=on_stdout, on_stderr=on_stderr, check=check, **options)
        )

    def stream(
        self, cmd: str | Sequence[str], **options: Unpack[ExecOptions]
    ) -> Iterator[CommandEvent]:
        return self._loop.iterate(self.aio.stream(cmd, **options))


class Files(_Blocking[AsyncFiles]):
    """Blocking ``sandbox.files``; see :class:`~hutch.sdk.files.AsyncFiles`."""

    def write(self, path: str, data: FileSource) -> int:
        return self._run(self.aio.write(path, data))

    def read_bytes(self, path: str) -> bytes:
        return self._run(self.aio.read_bytes(path))

    def read_text(self, path: str, *, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._run(self.aio.read_text(path, encoding=encoding, errors=errors))

    def iter_bytes(self, path: str, *, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        return self._loop.iterate(self.aio.iter_bytes(path, chunk_size=chunk_size))

    def download(self, path: str, dest: str | os.PathLike[str] | IO[bytes]) -> int:
        return self._run(self.aio.download(path, dest))


class Processes(_Blocking[AsyncProcesses]):
    """Blocking ``sandbox.processes``; see :class:`~hutch.sdk.processes.AsyncProcesses`."""

    def start(
        self,
        cmd: str | None = None,
        args: Sequence[str] | None = None,
        *,
        pty: tuple[int, int] | bool = False,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ProcessInfo:
        return self._run(self.aio.start(cmd, args, pty=pty, cwd=cwd, env=env))

    def list(self) -> builtins.list[ProcessInfo]:
        return self._run(self.aio.list())

    def get(self, process_id: str) -> ProcessInfo:
        return self._run(self.aio.get(process_id))

    def connect(self, process_id: str, *, after: int = 0) -> Iterator[ProcessEvent]:
        return self._loop.iterate(self.aio.connect(process_id, after=after))

    def send_input(self, process_id: str, data: bytes | str) -> int:
        return self._run(self.aio.send_input(process_id, data))

    def close_stdin(self, process_id: str) -> None:
        self._run(self.aio.close_stdin(process_id))

    def resize(self, process_id: str, rows: int, cols: int) -> None:
        self._run(self.aio.resize(process_id, rows, cols))

    def signal(self, process_id: str, signal: str) -> None:
        self._run(self.aio.signal(process_id, signal))

    def wait(
        self, process_id: str, *, scope: str = "leader", timeout_ms: int = 30_000
    ) -> ProcessInfo:
        return self._run(self.aio.wait(process_id, scope=scope, timeout_ms=timeout_ms))  # type: ignore[arg-type]

    def kill(self, process_id: str, *, grace_ms: int = 1000) -> ProcessInfo:
        return self._run(self.aio.kill(process_id, grace_ms=grace_ms))


class Egress(_Blocking[AsyncEgress]):
    """Blocking ``sandbox.egress``; see :class:`~hutch.sdk.egress.AsyncEgress`."""

    def get(self) -> builtins.list[str]:
        return self._run(self.aio.get())

    def set(self, rules: Sequence[str]) -> builtins.list[str]:
        return self._run(self.aio.set(rules))


class Sandbox(_BlockingResource[AsyncSandbox]):
    """A sandbox, blocking; see :class:`~hutch.sdk.sandbox.AsyncSandbox`.

    ``with Sandbox.create() as sandbox:`` kills it on the way out.
    """

    def __init__(self, aio: AsyncSandbox, client: Client) -> None:
        super().__init__(aio, client)
        self.client = client
        self.commands = Commands(aio.commands, client)
        self.files = Files(aio.files, client)
        self.processes = Processes(aio.processes, client)
        self.egress = Egress(aio.egress, client)
        self.computer = Computer(aio.computer, client)

    @property
    def info(self) -> SandboxInfo:
        return self.aio.info

    @property
    def status(self) -> str:
        return self.aio.status

    @property
    def ip(self) -> str | None:
        return self.aio.ip

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, name={self.name!r}, status={self.status!r})"

    @classmethod
    def create(
        cls,
        *,
        client: Client | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
        **options: Unpack[SandboxOptions],
    ) -> Sandbox:
        return cls._open(
            lambda aio: AsyncSandbox.create(client=aio, **options), client, api_url, api_key
        )

    @classmethod
    def connect(
        cls,
        sandbox_id: str,
        *,
        client: Client | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> Sandbox:
        return cls._open(
            lambda aio: AsyncSandbox.connect(sandbox_id, client=aio), client, api_url, api_key
        )

    @classmethod
    def list(
        cls,
        *,
        status: str | Sequence[str] | None = None,
        client: Client | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> builtins.list[Sandbox]:
        return cls._open_all(
            lambda aio: AsyncSandbox.list(status=status, client=aio), client, api_url, api_key
        )

    def refresh(self) -> SandboxInfo:
        return self._run(self.aio.refresh())

    def kill(self) -> None:
        self._run(self.aio.kill())

    def metrics(self) -> MetricsSample | None:
        return self._run(self.aio.metrics())

    def metrics_history(self, *, since: str | None = None) -> builtins.list[MetricsSample]:
        return self._run(self.aio.metrics_history(since=since))

    def pause(self) -> None:
        self._run(self.aio.pause())

    def resume(self) -> None:
        self._run(self.aio.resume())

    def set_timeout(self, seconds: float) -> None:
        self._run(self.aio.set_timeout(seconds))

    def preview_url(self, port: int) -> str:
        return self._run(self.aio.preview_url(port))

    def bandwidth(self) -> Bandwidth:
        return self._run(self.aio.bandwidth())

    def recharge(self, add_bytes: int) -> Bandwidth:
        return self._run(self.aio.recharge(add_bytes))

    def list_disks(self) -> builtins.list[DiskAttachment]:
        return self._run(self.aio.list_disks())

    def resize(self, disk_mib: int) -> None:
        self._run(self.aio.resize(disk_mib))

    def snapshot(self, name: str) -> Template:
        """See :meth:`AsyncSandbox.snapshot`."""
        from hutch.sdk.templates import Template  # (templates imports this module)

        return Template(self._run(self.aio.snapshot(name)), self.client)

    def create_access_token(self) -> str:
        return self._run(self.aio.create_access_token())

    def rotate_access_token(self) -> str:
        return self._run(self.aio.rotate_access_token())

    def disable_access_token(self) -> None:
        self._run(self.aio.disable_access_token())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.kill()


class Network(_BlockingResource[AsyncNetwork]):
    """A private network, blocking; see :class:`~hutch.sdk.networks.AsyncNetwork`."""

    @property
    def info(self) -> NetworkInfo:
        return self.aio.info

    @property
    def members(self) -> tuple[NetworkMember, ...] | None:
        return self.aio.members

    def __repr__(self) -> str:
        return f"Network(id={self.id!r}, name={self.name!r})"

    @classmethod
    def create(
        cls,
        name: str,
        *,
        client: Client | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> Network:
        return cls._open(
            lambda aio: AsyncNetwork.create(name, client=aio), client, api_url, api_key
        )

    @classmethod
    def get(
        cls,
        network: str,
        *,
        client: Client | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> Network:
        return cls._open(
            lambda aio: AsyncNetwork.get(network, client=aio), client, api_url, api_key
        )

    @classmethod
    def list(
        cls,
        *,
        client: Client | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> builtins.list[Network]:
        return cls._open_all(lambda aio: AsyncNetwork.list(client=aio), client, api_url, api_key)

    def refresh(self) -> NetworkInfo:
        return self._run(self.aio.refresh())

    def delete(self) -> None:
        self._run(self.aio.delete())

    def attach(self, sandbox: str | Identified) -> None:
        self._run(self.aio.attach(sandbox))

    def detach(self, sandbox: str | Identified) -> None:
        self._run(self.aio.detach(sandbox))


class Disk(_BlockingResource[AsyncDisk]):
    """A registered S3 bucket, blocking; see :class:`~hutch.sdk.disks.AsyncDisk`."""

    @property
    def info(self) -> DiskInfo:
        return self.aio.info

    def __repr__(self) -> str:
        return f"Disk(id={self.id!r}, name={self.name!r}, bucket={self.info.bucket!r})"

    @classmethod
    def create(
        cls,
        name: str,
        *,
        bucket: str,
        endpoint: str,
        access_key: str,
        secret_key: str,
        region: str | None = None,
        use_path_style: bool = False,
        client: Client | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> Disk:
        return cls._open(
            lambda aio: AsyncDisk.create(
                name, bucket=bucket, endpoint=endpoint, access_key=access_key,
                secret_key=secret_key, region=region, use_path_style=use_path_style, client=aio,
            ),
            client, api_url, api_key,
        )  # fmt: skip

    @classmethod
    def get(
        cls,
        disk: str,
        *,
        client: Client | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> Disk:
        return cls._open(lambda aio: AsyncDisk.get(disk, client=aio), client, api_url, api_key)

    @classmethod
    def list(
        cls,
        *,
        client: Client | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> builtins.list[Disk]:
        return cls._open_all(lambda aio: AsyncDisk.list(client=aio), client, api_url, api_key)

    def refresh(self) -> DiskInfo:
        return self._run(self.aio.refresh())

    def rotate_credentials(self, *, access_key: str, secret_key: str) -> DiskInfo:
        return self._run(self.aio.rotate_credentials(access_key=access_key, secret_key=secret_key))

    def delete(self) -> None:
        self._run(self.aio.delete())

    def attach(
        self, sandbox: str | Identified, mount_path: str, *, sub_path: str | None = None
    ) -> None:
        self._run(self.aio.attach(sandbox, mount_path, sub_path=sub_path))

    def detach(self, sandbox: str | Identified, mount_path: str) -> None:
        self._run(self.aio.detach(sandbox, mount_path))
