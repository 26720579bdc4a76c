"""hutch: a self-hosted sandbox cloud.

``from hutch import Sandbox`` (and the other names in ``__all__``) is the Python SDK,
:mod:`hutch.sdk`; it is imported on first use, so ``import hutch`` stays cheap.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["AsyncDisk", "AsyncNetwork", "AsyncSandbox", "AsyncTemplate", "Disk", "Network",
           "Sandbox", "Template", "__version__"]  # fmt: skip

if TYPE_CHECKING:
    from hutch.sdk import (
        AsyncDisk,
        AsyncNetwork,
        AsyncSandbox,
        AsyncTemplate,
        Disk,
        Network,
        Sandbox,
        Template,
    )

_SDK_NAMES = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    if name in _SDK_NAMES:
        import hutch.sdk

        return getattr(hutch.sdk, name)
    raise AttributeError(f"module 'hutch' has no attribute {name!r}")
