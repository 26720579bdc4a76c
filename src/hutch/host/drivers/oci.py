"""The OCI runtime config (``config.json``) of a sandbox, for runc.

What a sandbox gets: its own pid, mount, ipc, uts, cgroup and network namespaces; the
default container capability set and no more; ``no_new_privileges``; Docker's masked and
read-only ``/proc`` and ``/sys`` paths; a seccomp profile that refuses the system calls a
container has no business making (mounting, modules, kexec, clocks, namespaces, BPF, …);
and cgroup limits on memory, CPU and processes from its shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hutch.guest import bootstrap
from hutch.host.drivers.base import SandboxSpec
from hutch.host.guest_runtime import RUNTIME_MOUNT

__all__ = [
    "AGENT_FD",
    "CAPABILITIES",
    "GUEST_MOUNT",
    "oci_config",
    "process_env",
    "seccomp_profile",
]

GUEST_PARENT = "/.hutch"
GUEST_MOUNT = f"{GUEST_PARENT}/guest"  # the package hutch.guest, as ``guest``
AGENT_FD = 3
# Where a sandbox asks to be paused or deleted from inside (CreateOS's self-signal agent).
SELF_SIGNAL_HTTP = "127.0.0.1:1029"
SELF_SIGNAL_FIFO = "/run/self"

# Docker's default set.
CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

MASKED_PATHS = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
READONLY_PATHS = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
]

# Refused outright with EPERM. Most need a capability a sandbox lacks anyway; refusing
# them here as well keeps a kernel bug in one of them from being an escape.
_DENIED_SYSCALLS = [
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
    "delete_module", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
    "get_kernel_syms", "init_module", "ioperm", "iopl", "kcmp",
    "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mount",
    "mount_setattr", "move_mount", "name_to_handle_at", "nfsservctl",
    "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root",
    "process_vm_readv", "process_vm_writev", "query_module", "quotactl", "quotactl_fd",
    "reboot", "request_key", "setdomainname", "sethostname", "setns",
    "settimeofday", "stime", "swapoff", "swapon", "syslog", "sysfs", "umount", "umount2",
    "unshare", "uselib", "userfaultfd", "ustat", "vhangup", "vm86", "vm86old",
    "adjtimex", "fanotify_init", "lsm_set_self_attr",
]  # fmt: skip
_CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
    "CLONE_NEWTIME": 0x00000080,
}
_EPERM = 1
_ENOSYS = 38


def seccomp_profile() -> dict[str, Any]:
    """Allow by default; refuse the dangerous calls, and clone() into new namespaces."""
    rules: list[dict[str, Any]] = [
        {"names": _DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": _EPERM},
        # clone3 hides its flags in memory seccomp cannot read; ENOSYS makes libc use clone.
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": _ENOSYS},
    ]
    for flag in _CLONE_NAMESPACE_FLAGS.values():
        rules.append(
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": _EPERM,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }
        )
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32",
                          "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": rules,
    }  # fmt: skip


def process_env(spec: SandboxSpec, image_env: Mapping[str, str] | None) -> dict[str, str]:
    """The environment of the sandbox's init, and so of every command in it: hutch's
    defaults, the image's own ``Env`` over them, then ``HOSTNAME`` and the sandbox's envs."""
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "TERM": "xterm",
        "LANG": "C.UTF-8",
        **(image_env or {}),
        "HOSTNAME": spec.hostname,
        **spec.env,
    }


def oci_config(
    spec: SandboxSpec,
    *,
    rootfs: Path,
    netns: Path,
    guest_dir: Path,
    etc_dir: Path,
    cgroup_parent: str,
    memsw: bool,
    nofile: int,
    image_env: Mapping[str, str] | None = None,
    guest_python: Sequence[str] = ("/usr/bin/python3",),
    runtime_dir: Path | None = None,
) -> dict[str, Any]:
    """The config.json of one sandbox. ``etc_dir`` holds its hosts, hostname, resolv.conf.
    ``image_env`` is the image's own ``Env`` (an imported image's, say ``PATH``): it
    overrides hutch's defaults, and the sandbox's variables override it. ``guest_python``
    starts the guest agent's Python: the image's own, or (for an image without one) the
    runtime in ``runtime_dir``, mounted at :data:`~hutch.host.guest_runtime.RUNTIME_MOUNT`.

    ``nofile`` must not exceed the host's own hard limit: root here may not raise it.
    """
    env = process_env(spec, image_env)
    memory_bytes = spec.mem_mib * 1024 * 1024
    memory: dict[str, Any] = {"limit": memory_bytes}
    if memsw:
        memory["swap"] = memory_bytes  # memory + swap: no swap at all
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": [
                *guest_python,
                "-S",
                "-E",
                "-s",
                "-c",
                bootstrap(GUEST_PARENT),
                "--listen-fd",
                str(AGENT_FD),
                "--self-http",
                SELF_SIGNAL_HTTP,
                "--self-fifo",
                SELF_SIGNAL_FIFO,
            ],
            "env": [f"{key}={value}" for key, value in env.items()],
            "cwd": "/",
            "capabilities": {
                kind: list(CAPABILITIES)
                for kind in ("bounding", "effective", "permitted", "inheritable")
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": spec.hostname,
        "mounts": [
            {
                "destination": "/proc",
                "type": "proc",
                "source": "proc",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": [
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
            },
            {
                "destination": GUEST_MOUNT,
                "type": "bind",
                "source": str(guest_dir),
                "options": ["rbind", "ro", "nosuid", "nodev"],
            },
            *(
                {
                    "destination": f"/etc/{name}",
                    "type": "bind",
                    "source": str(etc_dir / name),
                    "options": ["bind", "rw", "nosuid", "nodev", "noexec"],
                }
                for name in ("hosts", "hostname", "resolv.conf")
            ),
            *(
                [
                    {
                        "destination": RUNTIME_MOUNT,
                        "type": "bind",
                        "source": str(runtime_dir),
                        "options": ["rbind", "ro", "nosuid", "nodev"],
                    }
                ]
                if runtime_dir is not None
                else []
            ),
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "cgroup"},
                {"type": "network", "path": str(netns)},
            ],
            "cgroupsPath": f"{cgroup_parent}/{spec.id}",
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                "memory": memory,
                "cpu": {"quota": spec.vcpu * 100_000, "period": 100_000},
                "pids": {"limit": spec.pids_limit},
            },
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": seccomp_profile(),
        },
    }
