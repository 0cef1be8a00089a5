"""The stand-in's edge proxy serves Fly's `http` handler (tests/kit/standin/README.md, Proxy):
`handlers = ["tls", "http"]` terminates TLS (ALPN http/1.1) and proxies HTTP/1.1 to the Machine
with the headers Fly's docs name (networking/services "HTTP handler", networking/request-headers),
an `Upgrade: websocket` becomes a raw pipe after the Machine's 101, so a browser's
`wss://<app>.fly.dev` reaches nats-server's websocket listener; `["http"]` alone serves plain
HTTP, and `force_https` answers 301 (networking/services "HTTP to HTTPS redirects").

The app is the test's own, deployed with flyctl alone: nats-server with a `websocket {}` block,
and busybox's httpd, whose CGI prints the request's headers as the Machine got them (HTTP_*).
busybox httpd is in the stand-in's base (Debian's busybox-static); alpine's busybox keeps it in
busybox-extras, so this app is for the stand-in only.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import struct
import time

import nats
import pytest

from nats_fly_testkit import fly as fh
from nats_fly_testkit.standin.api import StandInError

APP = "http-edge"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3

FLY_TOML = """app = "{app}"
primary_region = "ord"

# Browsers: wss://<app>.fly.dev, TLS and HTTP at Fly's edge, the upgrade to nats-server.
[[services]]
  internal_port = 8080
  protocol = "tcp"
  [[services.ports]]
    port = 443
    handlers = ["tls", "http"]

# busybox httpd: /cgi-bin/env prints the request's headers as the Machine got them.
[[services]]
  internal_port = 8081
  protocol = "tcp"
  [[services.ports]]
    port = 80
    handlers = ["http"]
  [[services.ports]]
    port = 8443
    handlers = ["http", "tls"]
  [[services.ports]]
    port = 8000
    handlers = ["http"]
    force_https = true

[[services]]
  internal_port = 4222
  protocol = "tcp"
  [[services.ports]]
    port = 10000
  [[services.ports]]
    port = 10001
    handlers = ["tls"]
  [[services.ports]]
    port = 10002
    handlers = ["proxy_proto"]
"""
NATS_CONF = """port: 4222
http_port: 8222
websocket { port: 8080, no_tls: true }
"""
START = """#!/bin/sh
httpd -f -p 8081 -h /www &
exec nats-server -c /etc/nats.conf
"""
CGI = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
env
"""


class WebSocket:
    """A minimal RFC 6455 client over the standard library (nats-py needs aiohttp for wss://,
    which the venv does not have): the opening handshake, masked frames out, frames in."""

    def __init__(self, address: tuple[str, int], hostname: str, ca: str, timeout: float = 10):
        ctx = ssl.create_default_context(cafile=ca)
        ctx.set_alpn_protocols(["h2", "http/1.1"])  # a browser offers both
        self.sock = ctx.wrap_socket(socket.create_connection(address, timeout=timeout), server_hostname=hostname)
        self.alpn = self.sock.selected_alpn_protocol()
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET / HTTP/1.1\r\nHost: {hostname}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"Origin: https://{hostname}\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed during the opening handshake after {buf!r}")
            buf += data
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.setdefault(name.strip().lower(), []).append(value.strip())
        self.accepted = self.headers.get("sec-websocket-accept") == [
            base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()]
        self.text = b""

    def send(self, payload: bytes, opcode: int = 2) -> None:
        mask, n = os.urandom(4), len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the websocket's connection closed")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self) -> tuple[int, bytes]:
        b0, b1 = self._take(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._take(8))[0]
        mask = self._take(4) if b1 & 0x80 else None
        data = self._take(n)
        if mask:
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        return b0 & 0x0F, data

    def line(self) -> str:
        """The next NATS protocol line, whatever the frames (a ping frame is answered)."""
        while b"\r\n" not in self.text:
            opcode, data = self.frame()
            if opcode == 8:
                raise ConnectionError(f"the server closed the websocket: {data!r}")
            if opcode == 9:
                self.send(data, 10)
            elif opcode in (0, 1, 2):
                self.text += data
        line, self.text = self.text.split(b"\r\n", 1)
        return line.decode()

    def until(self, prefix: str) -> str:
        while not (line := self.line()).startswith(prefix):
            if line == "PING":
                self.send(b"PONG\r\n")
        return line

    def close(self) -> None:
        self.sock.close()


def nats_ws(standin, region: str = "ord") -> WebSocket:
    """A NATS client over wss://<app>.fly.dev as a browser in `region` opens it."""
    ws = WebSocket(standin.edge(APP, region, 443), f"{APP}.fly.dev", standin.ca_file)
    assert ws.status == 101 and ws.accepted, (ws.status, ws.headers)
    assert ws.line().startswith("INFO ")
    ws.send(b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nPING\r\n')
    assert ws.until("PONG") == "PONG"
    return ws


def https(standin, port: int, region: str = "ord") -> http.client.HTTPConnection:
    """An HTTPS connection to `<app>.fly.dev:<port>`: the certificate verified under that name,
    the socket to the loopback listener (http.client then writes on it as it is)."""
    ctx = ssl.create_default_context(cafile=standin.ca_file)
    address = standin.edge(APP, region, port)
    conn = http.client.HTTPConnection(*address, timeout=10)
    conn.sock = ctx.wrap_socket(socket.create_connection(address, timeout=10), server_hostname=f"{APP}.fly.dev")
    return conn


def cgi_env(resp: http.client.HTTPResponse) -> dict[str, str]:
    assert resp.status == 200, resp.status
    return dict(line.split("=", 1) for line in resp.read().decode().splitlines() if "=" in line)


def closed_at_once(address: tuple[str, int], send: bytes = b"") -> bool:
    """The proxy takes the connection and closes it without a byte (a port the app's IPs do not serve)."""
    with socket.create_connection(address, timeout=5) as sock:
        if send:
            sock.sendall(send)
        try:
            return sock.recv(1024) == b""
        except ConnectionResetError:
            return True


@pytest.fixture(scope="module")
def edge_app(standin):
    context = standin.root / "contexts" / APP
    (context / "www" / "cgi-bin").mkdir(parents=True)
    pinned = (fh.FIXTURES / "example" / "Dockerfile").read_text().split("\nFROM ", 1)[1].split()[0]
    (context / "Dockerfile").write_text(f"FROM {pinned}\nCOPY nats.conf /etc/nats.conf\nCOPY www /www\n"
                                        'COPY start /usr/local/bin/start\nENTRYPOINT ["/usr/local/bin/start"]\n')
    (context / "fly.toml").write_text(FLY_TOML.format(app=APP))
    (context / "nats.conf").write_text(NATS_CONF)
    (context / "www" / "index.html").write_text("hello\n")
    for path, text in ((context / "start", START), (context / "www" / "cgi-bin" / "env", CGI)):
        path.write_text(text)
        path.chmod(0o755)

    def fly(*argv):
        proc = standin.flyctl(*argv, cwd=str(context))
        assert proc.returncode == 0, f"flyctl {' '.join(argv)}: {proc.stdout}{proc.stderr}"
        return proc

    fly("apps", "create", APP, "--org", "personal")
    try:
        fly("ips", "allocate-v6", "--app", APP)
        fly("ips", "allocate-v4", "--shared", "--app", APP)
        fly("deploy", ".", "--config", "fly.toml", "--remote-only", "--ha=false", "--yes", "--app", APP)
        deadline = time.monotonic() + 120
        while True:  # until nats-server and httpd listen
            try:
                nats_ws(standin).close()
                cgi_env(_get(http.client.HTTPConnection(*standin.edge(APP, "ord", 80), timeout=5), "/cgi-bin/env"))
                break
            except (AssertionError, OSError):
                assert time.monotonic() < deadline, "the app's listeners never came up behind the proxy"
                time.sleep(0.3)
        yield fly
    finally:
        standin.flyctl("apps", "destroy", APP, "--yes")


def _get(conn, path: str, headers: dict | None = None) -> http.client.HTTPResponse:
    conn.request("GET", path, headers=headers or {})
    return conn.getresponse()


def test_wss_upgrade_reaches_nats_server_and_carries_messages(standin, edge_app):
    """wss://<app>.fly.dev: TLS with the test CA (ALPN http/1.1), 101 from nats-server passed back
    (with Fly's Via), then NATS over websocket frames both ways, alongside a plain NATS client on
    the raw port: messages cross between them."""
    ws = WebSocket(standin.edge(APP, "ord", 443), f"{APP}.fly.dev", standin.ca_file)
    try:
        assert ws.alpn == "http/1.1"  # the stand-in's edge speaks HTTP/1.1 only (Fly also offers h2)
        assert (ws.status, ws.accepted) == (101, True), (ws.status, ws.headers)
        assert ws.headers["upgrade"] == ["websocket"] and ws.headers["via"] == ["1.1 fly.io"]
        info = ws.line()
        assert info.startswith("INFO ") and '"port":8080' in info  # nats-server's websocket listener
    finally:
        ws.close()

    sub, pub = nats_ws(standin), nats_ws(standin, "syd")  # syd has no Machine: the proxy goes to ord
    try:
        sub.send(b"SUB greet 1\r\nPING\r\n")
        assert sub.until("PONG") == "PONG"
        pub.send(b"PUB greet 5\r\nhello\r\nPING\r\n")
        assert pub.until("PONG") == "PONG"
        assert sub.until("MSG ") == "MSG greet 1 5" and sub.line() == "hello"

        async def plain_client():
            host, port = standin.edge(APP, "ord", 10000)
            nc = await nats.connect(f"nats://{host}:{port}", connect_timeout=5, allow_reconnect=False)
            try:
                inbox = await nc.subscribe("from.browser")
                await nc.flush()
                pub.send(b"PUB from.browser 2\r\nhi\r\n")
                got = await inbox.next_msg(timeout=30)  # one server: no interest to propagate
                await nc.publish("greet", b"from tcp")
                await nc.flush()
                return got.data
            finally:
                await nc.close()
        assert asyncio.run(plain_client()) == b"hi"
        assert sub.until("MSG ") == "MSG greet 1 8" and sub.line() == "from tcp"
    finally:
        sub.close()
        pub.close()


def test_the_machine_sees_the_headers_fly_adds(standin, edge_app):
    """busybox httpd's CGI prints the request as the Machine got it: Fly-Client-IP (the proxy's
    peer), X-Forwarded-For (the client's list, the peer, then the app's IPv4 rightmost),
    X-Forwarded-Proto/SSL, X-Forwarded-Port (the client's own kept), Fly-Forwarded-Port,
    Fly-Region (the edge's region, not the Machine's FLY_REGION), Via; a spoofed Fly-Client-IP
    is replaced. HTTP/1.1 to the Machine; a client's keep-alive connection takes several requests."""
    shared_v4 = next(ip["Address"] for ip in _ips(edge_app) if ip["Type"] == "shared_v4")

    conn = https(standin, 8443, region="syd")
    env = cgi_env(_get(conn, "/cgi-bin/env", {"Host": f"{APP}.fly.dev", "X-Forwarded-For": "203.0.113.9",
                                              "Fly-Client-IP": "198.51.100.1", "Fly-Region": "xxx"}))
    conn.close()
    assert env["HTTP_FLY_CLIENT_IP"] == "127.0.0.1"
    assert env["HTTP_X_FORWARDED_FOR"] == f"203.0.113.9, 127.0.0.1, {shared_v4}"
    assert (env["HTTP_X_FORWARDED_PROTO"], env["HTTP_X_FORWARDED_SSL"]) == ("https", "on")
    assert env["HTTP_X_FORWARDED_PORT"] == env["HTTP_FLY_FORWARDED_PORT"] == "8443"
    assert (env["HTTP_FLY_REGION"], env["FLY_REGION"]) == ("syd", "ord")
    assert env["HTTP_VIA"] == "1.1 fly.io"
    assert env["HTTP_HOST"] == f"{APP}.fly.dev" and env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert not [k for k in env if k.startswith("HTTP_FLY_") and k not in (
        "HTTP_FLY_CLIENT_IP", "HTTP_FLY_FORWARDED_PORT", "HTTP_FLY_REGION")]

    conn = http.client.HTTPConnection(*standin.edge(APP, "ord", 80), timeout=10)
    env = cgi_env(_get(conn, "/cgi-bin/env", {"X-Forwarded-Port": "8080", "Via": "1.1 corp-proxy"}))
    assert (env["HTTP_X_FORWARDED_PROTO"], env["HTTP_X_FORWARDED_SSL"]) == ("http", "off")
    assert (env["HTTP_X_FORWARDED_PORT"], env["HTTP_FLY_FORWARDED_PORT"]) == ("8080", "80")  # the client's kept
    assert env["HTTP_X_FORWARDED_FOR"] == f"127.0.0.1, {shared_v4}" and env["HTTP_FLY_REGION"] == "ord"
    assert env["HTTP_VIA"] == "1.1 corp-proxy, 1.1 fly.io"
    conn.close()

    # Keep-alive: a static file has a Content-Length, so the client's connection to the edge takes
    # request after request (httpd closes its own after each; the proxy dials the Machine again).
    conn = http.client.HTTPConnection(*standin.edge(APP, "ord", 80), timeout=10)
    conn.connect()
    first = conn.sock
    for _ in range(3):
        resp = _get(conn, "/index.html")
        assert (resp.status, resp.read(), resp.getheader("Via")) == (200, b"hello\n", "1.1 fly.io")
        assert conn.sock is first
    # A request body goes through; the CGI's answer ends with the connection, so the edge says close.
    conn.request("POST", "/cgi-bin/env", body=b"x" * 100)
    resp = conn.getresponse()
    assert resp.getheader("Connection") == "close"
    env = cgi_env(resp)
    assert (env["REQUEST_METHOD"], env["CONTENT_LENGTH"]) == ("POST", "100")
    conn.close()

    # nats-server answers a plain HTTP request on its websocket port itself (400), through the proxy.
    conn = https(standin, 443)
    resp = _get(conn, "/", {"Host": f"{APP}.fly.dev"})
    assert resp.status == 400 and resp.getheader("Sec-WebSocket-Version") == "13"
    conn.close()


def test_force_https_redirects_every_request(standin, edge_app):
    """`force_https = true` on an http port: a 301 to https://<host><path>, the Machine not asked."""
    conn = http.client.HTTPConnection(*standin.edge(APP, "ord", 8000), timeout=10)
    for path in ("/", "/cgi-bin/env?x=1"):
        resp = _get(conn, path, {"Host": f"{APP}.fly.dev:8000"})
        assert resp.status == 301 and resp.getheader("Location") == f"https://{APP}.fly.dev{path}"
        assert resp.read() == b""
    conn.close()


def test_ports_the_app_does_not_serve_are_refused(standin, edge_app):
    """A port not in fly.toml and a handler the stand-in does not serve (proxy_proto) are refused
    by edge(); with only the shared IPv4 left, raw TCP and plain HTTP off port 80 are closed at
    once, while 443 tls+http, a tls+http port, a tls port and 80 http still serve (docs
    networking/services "Shared IPv4"; fly.md 1.7)."""
    with pytest.raises(StandInError, match=r"has no deployed \[\[services.ports\]\] port 9999"):
        standin.edge(APP, "ord", 9999)
    with pytest.raises(StandInError, match=r"does not serve handlers = \['proxy_proto'\]"):
        standin.edge(APP, "ord", 10002)

    v6 = [ip["Address"] for ip in _ips(edge_app) if ip["Type"] == "v6"]
    assert closed_at_once(standin.edge(APP, "ord", 10000)) is False  # with the v6: nats-server's INFO
    edge_app("ips", "release", *v6, "--app", APP)
    try:
        assert closed_at_once(standin.edge(APP, "ord", 10000))
        assert closed_at_once(standin.edge(APP, "ord", 8000), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        nats_ws(standin).close()
        conn = https(standin, 8443)
        assert cgi_env(_get(conn, "/cgi-bin/env", {"Host": f"{APP}.fly.dev"}))["HTTP_X_FORWARDED_PROTO"] == "https"
        conn.close()
        conn = http.client.HTTPConnection(*standin.edge(APP, "ord", 80), timeout=10)
        assert cgi_env(_get(conn, "/cgi-bin/env"))["HTTP_FLY_FORWARDED_PORT"] == "80"
        conn.close()
        ctx = ssl.create_default_context(cafile=standin.ca_file)
        with ctx.wrap_socket(socket.create_connection(standin.edge(APP, "ord", 10001), timeout=10),
                             server_hostname=f"{APP}.fly.dev") as tls:
            assert re.match(rb"INFO \{", tls.recv(4096))  # TLS at the edge, plaintext INFO inside
    finally:
        edge_app("ips", "allocate-v6", "--app", APP)


def _ips(fly) -> list[dict]:
    return json.loads(fly("ips", "list", "--json", "--app", APP).stdout)
