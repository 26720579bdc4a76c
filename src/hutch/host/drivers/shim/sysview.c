/* hutch-sysview VIEW PROGRAM [ARG...]: run PROGRAM in a mount namespace of its own where
 * /proc/sys shows every entry of the host's but net. Debian's runsc of 2022 refuses to
 * start a sandbox when /proc/sys/net/core/rmem_default exists in its network namespace,
 * which kernels since 6.x show in every one (gVisor issue 10704): `runsc run` and
 * `runsc restore` go through this. VIEW is an empty directory to build the view in (a
 * tmpfs is mounted on it in the new namespace only, then moved onto /proc/sys).
 * Built by hutch.host.drivers.gvisor_features at the host's start; the same as
 * `unshare --mount --propagation private sh -c '...mount...'`, without ~18 processes. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static void die(const char *what, const char *path) {
    fprintf(stderr, "hutch-sysview: %s %s: %s\n", what, path, strerror(errno));
    exit(125);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: hutch-sysview VIEW PROGRAM [ARG...]\n");
        return 125;
    }
    const char *view = argv[1];
    if (unshare(CLONE_NEWNS) != 0) die("unshare", "mount namespace");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("make private", "/");
    if (mount("hutch-sysctl", view, "tmpfs", 0, "size=64k,mode=0555") != 0) die("tmpfs", view);
    DIR *sys = opendir("/proc/sys");
    if (sys == NULL) die("open", "/proc/sys");
    struct dirent *entry;
    char source[4096], target[4096];
    while ((entry = readdir(sys)) != NULL) {
        const char *name = entry->d_name;
        if (!strcmp(name, ".") || !strcmp(name, "..") || !strcmp(name, "net")) continue;
        snprintf(source, sizeof source, "/proc/sys/%s", name);
        snprintf(target, sizeof target, "%s/%s", view, name);
        if (mkdir(target, 0755) != 0) die("mkdir", target);
        if (mount(source, target, NULL, MS_BIND, NULL) != 0) die("bind", source);
    }
    closedir(sys);
    if (mount(view, "/proc/sys", NULL, MS_MOVE, NULL) != 0) die("move onto /proc/sys", view);
    execvp(argv[2], argv + 2);
    die("exec", argv[2]);
    return 125;
}
