"""Boot one Machine: run under `ip netns exec <ns>`, which gives it the Machine's
network namespace, a private mount namespace and /etc/netns/<ns>/ files.

Here the image's root filesystem is assembled (overlay of the image layers plus a
fresh writable layer, as a Fly Machine's root is reset on every start), volumes
are bound at their mount paths, the hostname becomes the Machine ID, and the
image's ENTRYPOINT+CMD is exec'd with the Fly environment and, as Fly's init starts it, every signal
at its default disposition and none blocked (whoever started the stand-in, `nohup` say, may have left
SIGHUP ignored, and a shell cannot trap a signal ignored on entry). Stdlib only.
"""
import ctypes
import json
import os
import signal
import sys

MS_RDONLY, MS_BIND, MS_REC = 1, 4096, 16384
CLONE_NEWUTS = 0x04000000
libc = ctypes.CDLL(None, use_errno=True)


def check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    check(libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                     data.encode() if data else None), f"mount {source} on {target}")


def bind(source: str, target: str, flags: int = 0) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            open(target, "a").close()
    mount(source, target, None, MS_BIND | MS_REC | flags)


def default_signals() -> None:
    """Every signal at its default disposition and none blocked, as Fly's init starts a Machine's process."""
    for number in range(1, signal.NSIG):
        try:
            signal.signal(number, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # SIGKILL, SIGSTOP and the numbers no signal has
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def main(spec_path: str) -> None:
    spec = json.load(open(spec_path))
    root = spec["root"]
    check(libc.unshare(CLONE_NEWUTS), "unshare(uts)")
    name = spec["hostname"].encode()
    check(libc.sethostname(name, len(name)), "sethostname")

    mount("overlay", root, "overlay",
          data=f"lowerdir={':'.join(spec['lower'])},upperdir={spec['upper']},workdir={spec['work']}")
    mount("proc", f"{root}/proc", "proc")
    bind("/dev", f"{root}/dev")
    bind("/sys", f"{root}/sys")
    for source, target in spec["binds"]:
        bind(source, root + target)

    os.chroot(root)
    os.chdir(spec.get("workdir") or "/")
    os.setsid()
    default_signals()
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as e:
        print(f"Error: failed to spawn command: {' '.join(argv)}: {e.strerror}", file=sys.stderr)
        sys.exit(127 if e.errno == 2 else 126)


if __name__ == "__main__":
    main(sys.argv[1])
