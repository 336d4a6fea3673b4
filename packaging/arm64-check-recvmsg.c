/* recvmsg() with no iovec, for packaging/arm64-check's emulated arm64 root only.
 *
 * qemu-user (7.2 in Debian 12, also 10.0 in bookworm-backports) answers a recvmsg()
 * whose msghdr has no iovec with 0 at once, without asking the kernel: a socket with
 * nothing queued reads as an empty message instead of failing with EAGAIN. systemd
 * passes namespace fds that way (PrivateIPC=, PrivateNetwork=): it takes the 0 for a
 * message without an fd and fails the unit with "Failed to set up IPC namespacing:
 * Input/output error". To the kernel, no iovec and one empty iovec are the same call;
 * this makes the second. The check builds it in the root and lists it in the root's
 * /etc/ld.so.preload; it never reaches the package or a box.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    static ssize_t (*real)(int, struct msghdr *, int);
    if (real == NULL)
        real = (ssize_t(*)(int, struct msghdr *, int))dlsym(RTLD_NEXT, "recvmsg");
    if (msg == NULL || msg->msg_iovlen != 0)
        return real(fd, msg, flags);

    char unused;
    struct iovec empty = {.iov_base = &unused, .iov_len = 0};
    struct msghdr one = *msg;
    one.msg_iov = &empty;
    one.msg_iovlen = 1;
    ssize_t n = real(fd, &one, flags);
    msg->msg_namelen = one.msg_namelen;
    msg->msg_controllen = one.msg_controllen;
    msg->msg_flags = one.msg_flags;
    return n;
}
