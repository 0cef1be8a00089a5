"""The `flyctl` (and `fly`) executable the tests put on PATH: a thin client that
hands its argv to the stand-in daemon and prints what comes back. Stdlib only.

Stdin is read only by the commands that consume it (`secrets import`,
`secrets set K=-`). The token itself is never sent: only its SHA-256, by which the daemon
knows a token made with `StandIn.make_token` (and so its scope).
"""
import hashlib
import json
import os
import socket
import sys

ENV_KEYS = ("FLY_APP", "FLY_ORG", "FLY_REGION", "NFLY_LATENCY_MS")


def _reads_stdin(argv: list[str]) -> bool:
    words = [a for a in argv if not a.startswith("-")]
    return words[:2] == ["secrets", "import"] or (words[:2] == ["secrets", "set"]
                                                   and any(a.endswith("=-") for a in argv))


def main() -> None:
    argv = sys.argv[1:]
    root = os.environ.get("NFLY_STATE")
    if not root:
        sys.stderr.write("Error: NFLY_STATE is not set: this flyctl is the nats-fly test stand-in\n")
        sys.exit(1)
    stdin = None
    if _reads_stdin(argv) and sys.stdin is not None and not sys.stdin.isatty():
        stdin = sys.stdin.read()
    env = {k: os.environ[k] for k in ENV_KEYS if os.environ.get(k)}
    token = os.environ.get("FLY_ACCESS_TOKEN") or os.environ.get("FLY_API_TOKEN") or ""
    env["token"] = hashlib.sha256(token.encode()).hexdigest() if token else ""
    request = {"op": "flyctl", "argv": argv, "cwd": os.getcwd(), "env": env, "stdin": stdin,
               "tty": os.isatty(0) and os.isatty(1)}
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.path.join(root, "daemon.sock"))
    except OSError as e:
        sys.stderr.write(f"Error: the Fly stand-in is not running ({e})\n")
        sys.exit(1)
    sock.sendall((json.dumps(request) + "\n").encode())
    code = 1
    try:
        for line in sock.makefile("r", encoding="utf-8"):
            message = json.loads(line)
            if "out" in message:
                sys.stdout.write(message["out"])
                sys.stdout.flush()
            elif "err" in message:
                sys.stderr.write(message["err"])
                sys.stderr.flush()
            elif "exit" in message:
                code = message["exit"]
                break
    except KeyboardInterrupt:
        code = 127
    sys.exit(code)


if __name__ == "__main__":
    main()
