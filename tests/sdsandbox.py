"""A throw-away, real systemd for tests: PID 1 of its own namespaces on an overlay of /.

Tests of the Debian package and the units need a systemd that runs as PID 1, which this
machine's does not. ``Sandbox.up()`` boots one in about a second: a root overlay
(this machine's / below, a tmpfs above, so ``dpkg -i`` inside never touches the host),
its own user, pid, mount, network (loopback only), ipc, uts and cgroup namespaces,
fresh /run, /tmp and /dev/shm, /proc/sys and /sys read-only, and every mount shared
within the guest, as systemd makes them on a machine (its credentials, LoadCredential=,
need that)::

    with Sandbox(binds=[deb_dir]) as guest:
        guest.run("dpkg", "-i", deb)
        guest.run("systemctl", "start", "pipelined")
        guest.run("pipectl", "status", user="alice")

Limits, which the tests must respect: the guest shares this machine's installed
packages (its root is an overlay of ours); its cgroups have no controllers (so
DeviceAllow=, memory and CPU limits are not enforced inside); it has no network
but loopback; uids 0-65535 map to the same host uids. ``unavailable()`` says why a
sandbox cannot run here (not root, no unshare/nsenter/script, no systemd, no cgroup2),
so tests skip with that reason. ``down()`` powers the guest off and removes its cgroup
and state directory; it is safe to call whatever state ``up()`` reached.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

SYSTEMD = Path("/lib/systemd/systemd")


def _cgroot() -> Path:
    """Where cgroup2 is: /sys/fs/cgroup/unified on a hybrid host, else /sys/fs/cgroup."""
    hybrid = Path("/sys/fs/cgroup/unified")
    return hybrid if (hybrid / "cgroup.controllers").exists() else Path("/sys/fs/cgroup")


CGROOT = _cgroot()
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Units that make no sense in a throw-away guest (timers, hardware, the host's services).
MASKED = (
    "getty@tty1.service systemd-timesyncd.service e2scrub_reap.service apt-daily.timer"
    " apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer man-db.timer"
    " systemd-pstore.service remote-fs.target systemd-sysctl.service systemd-modules-load.service"
    " modprobe@.service sys-kernel-debug.mount sys-kernel-tracing.mount"
    " sys-fs-fuse-connections.mount dev-hugepages.mount systemd-remount-fs.service"
    " systemd-tmpfiles-clean.timer postgresql.service"
)

# Stage 1 runs as real root in a private mount namespace and builds the guest's root;
# stage 2 is PID 1 of the new namespaces: it mounts the kernel file systems, pivots and
# execs systemd. The uid map is written from outside (stage 1) once the child exists.
BOOT_SCRIPT = r"""
set -eu
STATE=$1; CG=$2; NAME=$3
case "$4" in
stage1)
  R=$STATE/root
  mount --make-rprivate /
  mkdir -p "$R"; mount -t tmpfs -o mode=755 tmpfs "$R"
  mkdir -p "$R/upper" "$R/work" "$R/root"
  mount -t overlay overlay -o "lowerdir=/,upperdir=$R/upper,workdir=$R/work" "$R/root"
  G=$R/root
  mount -t tmpfs -o mode=755,nosuid tmpfs "$G/dev"
  for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    n=${d%%:*}; mm=${d#*:}; mknod -m 666 "$G/dev/$n" c "${mm%:*}" "${mm#*:}"
  done
  mkdir "$G/dev/pts" "$G/dev/shm" "$G/dev/mqueue"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$G/tmp"
  CONS=$(tty || true)
  if [ -n "$CONS" ] && [ -e "$CONS" ]; then
    touch "$G/dev/console"; mount --bind "$CONS" "$G/dev/console"
  fi
  while read -r b; do mkdir -p "$G$b"; mount --bind "$b" "$G$b"; done <"$STATE/binds"
  E=$G/etc/systemd/system; mkdir -p "$E" "$G/etc/tmpfiles.d"
  for u in $(cat "$STATE/masked"); do ln -sf /dev/null "$E/$u"; done
  ln -sf /dev/null "$G/etc/tmpfiles.d/tmp.conf"
  mkdir -p "$CG"; echo $$ >"$CG/cgroup.procs"
  F=$STATE/go.fifo; rm -f "$F"; mkfifo "$F"
  unshare --user --pid --fork --net --uts --ipc --cgroup --mount --propagation private \
    sh -c "read x <$F; exec sh $STATE/boot.sh $STATE $CG $NAME stage2" &
  U=$!
  while [ "$(readlink /proc/$U/ns/user)" = "$(readlink /proc/self/ns/user)" ]; do sleep 0.01; done
  echo '0 0 65536' >/proc/$U/uid_map
  echo '0 0 65536' >/proc/$U/gid_map
  echo go >"$F"
  wait $U
  ;;
stage2)
  G=$STATE/root/root
  mount --rbind "$G" "$G"
  mount -t proc proc "$G/proc"
  mount --bind "$G/proc/sys" "$G/proc/sys"
  mount -o remount,bind,ro "$G/proc/sys"
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$G/sys"
  mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$G/sys/fs/cgroup"
  mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$G/dev/pts"
  ln -sf pts/ptmx "$G/dev/ptmx"
  mount -t tmpfs -o mode=1777 tmpfs "$G/dev/shm"
  mount -t mqueue mqueue "$G/dev/mqueue"
  mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$G/run"
  hostname "$NAME"
  cd "$G"; mkdir -p oldroot; pivot_root . oldroot; umount -l /oldroot; rmdir /oldroot
  # Shared, as systemd makes / on a machine but not in a container: it sets up a unit's
  # credentials (LoadCredential=) in a namespace of its own and relies on their mount
  # propagating to /run/credentials. These peers live in this namespace only.
  mount --make-rshared /
  exec env -i container=pipelined-sandbox TERM=linux /lib/systemd/systemd --unit=basic.target
  ;;
esac
"""


class SandboxError(Exception):
    """The guest did not boot, or a command in it failed; carries what it printed."""


def unavailable() -> str | None:
    """Why a sandbox cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (it mounts an overlay and boots systemd in new namespaces)"
    for tool in ("unshare", "nsenter", "script", "mkfifo"):
        if shutil.which(tool) is None:
            return f"needs {tool} (util-linux / bsdutils), which is not installed"
    if not os.access(SYSTEMD, os.X_OK):
        return f"needs systemd installed ({SYSTEMD})"
    if not (CGROOT / "cgroup.controllers").exists() or not os.access(CGROOT, os.W_OK):
        return f"needs a writable cgroup2 hierarchy at {CGROOT}"
    probe = subprocess.run(
        ["unshare", "--user", "--pid", "--fork", "--mount", "--ipc", "--cgroup", "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"cannot create namespaces here: {probe.stderr.strip() or probe.returncode}"
    return None


class Sandbox:
    """One guest systemd; ``up()`` boots it, ``run()`` runs commands in it, ``down()`` ends it."""

    def __init__(self, name: str | None = None, binds: Sequence[os.PathLike[str] | str] = ()):
        self.name = name or f"pltest-{os.getpid()}"
        self.state = Path("/tmp") / self.name
        self.cgroup = CGROOT / self.name
        self.binds = [Path(b).resolve() for b in binds]
        self._boot: subprocess.Popen[bytes] | None = None

    # -- life -------------------------------------------------------------------------

    def up(self, timeout: float = 60.0) -> Sandbox:
        if self.state.exists() or self.cgroup.exists():
            self.down()
        self.state.mkdir(mode=0o700)
        (self.state / "binds").write_text("".join(f"{b}\n" for b in self.binds))
        (self.state / "masked").write_text(MASKED + "\n")
        (self.state / "boot.sh").write_text(BOOT_SCRIPT)
        boot = [str(self.state / "boot.sh"), str(self.state), str(self.cgroup), self.name]
        stage1 = shlex.join(["unshare", "--mount", "--propagation=private", "sh", *boot, "stage1"])
        # `script` gives the guest a terminal for /dev/console and keeps what it printed.
        self._boot = subprocess.Popen(
            ["setsid", "script", "-qfec", stage1, str(self.state / "console.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid is not None:
                state = self._nsenter(["systemctl", "is-system-running", "--wait"], timeout=30)
                if state.stdout.strip() in ("running", "degraded"):
                    return self
            if self._boot.poll() is not None:
                break
            time.sleep(0.05)
        console = self.console()
        self.down()
        raise SandboxError(f"the guest systemd did not come up in {timeout:g} s:\n{console}")

    def down(self) -> None:
        """Power off, kill what is left, remove the cgroup and the state directory."""
        pid = self.pid
        if pid is not None:
            self._nsenter(["systemctl", "poweroff"], timeout=10)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self._boot is not None:
            try:
                self._boot.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self._boot.pid, signal.SIGKILL)
                self._boot.wait(10)
            self._boot = None
        for _ in range(100):
            if not self.cgroup.exists():
                break
            for d in sorted(self.cgroup.rglob("*"), key=lambda p: -len(p.parts)):
                if d.is_dir():
                    _kill_cgroup(d)
                    try:
                        d.rmdir()
                    except OSError:
                        pass
            _kill_cgroup(self.cgroup)
            try:
                self.cgroup.rmdir()
            except OSError:
                time.sleep(0.05)
        shutil.rmtree(self.state, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self.up()

    def __exit__(self, *_: object) -> None:
        self.down()

    @property
    def pid(self) -> int | None:
        """The host pid of the guest's PID 1 (systemd moves itself into init.scope)."""
        try:
            first = (self.cgroup / "init.scope" / "cgroup.procs").read_text().split()
        except OSError:
            return None
        return int(first[0]) if first else None

    # -- inside ---------------------------------------------------------------------------

    def run(
        self,
        *cmd: str,
        user: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in the guest with a clean environment, as root or as ``user``."""
        argv = ["env", "-i", f"PATH={GUEST_PATH}", "LANG=C.UTF-8", "SYSTEMD_COLORS=0"]
        argv += ["SYSTEMD_PAGER=", "TERM=dumb"]
        if user is not None:
            argv += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
        result = self._nsenter([*argv, *cmd], timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise SandboxError(
                f"{shlex.join(cmd)} exited {result.returncode} in the guest"
                f"{f' as {user}' if user else ''}:\n{result.stdout}{result.stderr}"
            )
        return result

    def sh(self, script: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-c", script, **kwargs)  # type: ignore[arg-type]

    def path(self, guest_path: str) -> Path:
        """A guest file as the host sees it (through /proc/<pid1>/root), for reading."""
        pid = self.pid
        if pid is None:
            raise SandboxError("no guest is running")
        return Path(f"/proc/{pid}/root") / guest_path.lstrip("/")

    def console(self) -> str:
        try:
            return (self.state / "console.log").read_text(errors="replace")[-4000:]
        except OSError:
            return "(no console log)"

    def _nsenter(
        self, argv: list[str], timeout: float, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        pid = self.pid
        if pid is None:
            raise SandboxError("no guest is running")
        try:
            return subprocess.run(
                ["nsenter", "-t", str(pid), "-a", *argv],
                capture_output=True,
                text=True,
                timeout=timeout,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise SandboxError(f"{shlex.join(argv)} took more than {timeout:g} s") from exc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill_cgroup(cgroup: Path) -> None:
    """SIGKILL whatever is left in a cgroup (cgroup.kill, Linux 5.14+; else one by one)."""
    try:
        (cgroup / "cgroup.kill").write_text("1")
        return
    except OSError:
        pass
    try:
        pids = (cgroup / "cgroup.procs").read_text().split()
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
