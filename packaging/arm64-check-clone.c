/* clone() with namespace flags, for packaging/arm64-check's emulated arm64 root only.
 *
 * qemu-user refuses a clone() whose flags ask for new namespaces (EINVAL), though the
 * kernel would make them. systemd forks with CLONE_NEWNS through syscall(__NR_clone,
 * ...) when it mounts a unit's credentials (LoadCredential=), so under emulation every
 * such unit failed with "Failed to set up credentials: Invalid argument". This makes
 * that call a plain fork-like clone, then unshare() of the same namespaces in the child
 * (which qemu passes on): to the caller, the same child in the same new namespaces.
 * The check builds it in the root and preloads it into the guest's systemd only; it
 * never reaches the package or a box.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sched.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NAMESPACES \
    (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWCGROUP)

long syscall(long number, ...)
{
    static long (*real)(long, ...);
    if (real == NULL)
        real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    va_list ap;
    va_start(ap, number);
    long a[6];
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);

    /* Only systemd's raw_clone(): a fork (no new stack) asking for namespaces. */
    if (number != SYS_clone || (a[0] & NAMESPACES) == 0 || a[1] != 0 ||
        (a[0] & (CLONE_VM | CLONE_THREAD)) != 0)
        return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);

    long pid = real(SYS_clone, a[0] & ~(long)NAMESPACES, 0L, 0L, 0L, 0L);
    if (pid == 0 && unshare((int)(a[0] & NAMESPACES)) < 0)
        _exit(127); /* the child could not be what was asked for: it fails at once */
    return pid;
}
