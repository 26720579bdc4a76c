/* Loaded into every program of a gvisor sandbox (/etc/ld.so.preload) when the host's runsc
 * refuses AT_NO_AUTOMOUNT in statx() and fstatat() with EINVAL, as Debian's 2022 build
 * does: coreutils' ls and stat send it. Automounts do not exist in a sandbox, so dropping
 * the flag changes nothing else. Built by hutch.host.drivers.gvisor_features at the host's start. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

struct statx;

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
    return (int)syscall(SYS_statx, dirfd, path, flags & ~AT_NO_AUTOMOUNT, mask, buf);
}

int fstatat(int dirfd, const char *path, struct stat *buf, int flags) {
    return (int)syscall(SYS_newfstatat, dirfd, path, buf, flags & ~AT_NO_AUTOMOUNT);
}

int fstatat64(int dirfd, const char *path, struct stat64 *buf, int flags) {
    return (int)syscall(SYS_newfstatat, dirfd, path, buf, flags & ~AT_NO_AUTOMOUNT);
}
