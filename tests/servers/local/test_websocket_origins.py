"""websocketOrigins against the pinned nats-server (issue 17, 4.1): the origins settings writes let in
the Origin a browser sends for that page (the URL Standard's serialisation: a Unicode host as
punycode, a canonical IPv6 address, no default port), and what they replaced lets no page in, or
keeps nats-server from starting: the refusals and rewrites in origins.py are what nats-server needs."""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from nats_fly.render import natsconf
from nats_fly.config import settings
from nats_fly_testkit.support import free_ports, nats_server_binary

# (origin as given, the Origin header a browser sends from that page)
MADE_TO_WORK = [
    ("https://bücher.example", "https://xn--bcher-kva.example"),
    ("https://faß.de:8443", "https://xn--fa-hia.de:8443"),
    ("https://App.Example.COM:443", "https://app.example.com"),
    ("http://localhost:08080", "http://localhost:8080"),
    ("https://[0:0:0:0:0:0:0:1]:8443", "https://[::1]:8443"),
    ("https://site.example.org/", "https://site.example.org"),
]
# Given as they are, these let no page in (nats-server compares host, scheme and port literally); settings
# writes them as the browser sends them, or refuses them (None).
USELESS_AS_GIVEN = [
    ("https://bücher.example", "https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
    ("https://*.example.com", "https://app.example.com", None),
    ("http://localhost:08080", "http://localhost:8080", "http://localhost:8080"),
    ("https://[0:0:0:0:0:0:0:1]:8443", "https://[::1]:8443", "https://[::1]:8443"),
    ("http://127.1:8080", "http://127.0.0.1:8080", None),
    ("https://app.example.com:", "https://app.example.com", None),
]


def conf(path: Path, origins: list[str]) -> tuple[Path, int]:
    client, web = free_ports(2)
    text = natsconf.render({"listen": f"127.0.0.1:{client}", "websocket": {
        "host": "127.0.0.1", "port": web, "no_tls": True, "allowed_origins": origins}})
    path.write_text(text)
    return path, web


def upgrade_status(port: int, origin: str) -> int:
    """The HTTP status nats-server answers a WebSocket upgrade from a page of `origin` with."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        return int(sock.recv(64).split(b" ")[1])


@pytest.fixture
def serve(tmp_path):
    servers = []

    def start(name: str, origins: list[str]) -> int:
        path, port = conf(tmp_path / f"{name}.conf", origins)
        server = subprocess.Popen([nats_server_binary(), "-c", str(path)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        servers.append(server)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, f"{name}: nats-server did not listen"
                time.sleep(0.05)
    yield start
    for server in servers:
        server.terminate()
        server.wait(timeout=10)


def test_the_origins_settings_write_let_the_browsers_origin_in(serve):
    s = settings.load({"app": "web", "regions": ["ord"], "websocket": True,
                       "websocketOrigins": [given for given, _ in MADE_TO_WORK]})
    port = serve("written", list(s.websocket_origins))
    for given, browser in MADE_TO_WORK:
        assert upgrade_status(port, browser) == 101, (given, browser, s.websocket_origins)
    assert upgrade_status(port, "https://evil.example") == 403


@pytest.mark.parametrize("given,browser,written", USELESS_AS_GIVEN, ids=[g for g, _, _ in USELESS_AS_GIVEN])
def test_what_they_replace_lets_no_page_in(serve, given, browser, written):
    port = serve("raw", [given])
    assert upgrade_status(port, browser) == 403
    stack = {"app": "web", "regions": ["ord"], "websocket": True, "websocketOrigins": [given]}
    if written is None:
        with pytest.raises(settings.SettingsError, match="nats-fly:websocketOrigins: "):
            settings.load(stack)
    else:
        assert settings.load(stack).websocket_origins == (written,)


@pytest.mark.parametrize("given,why", [
    ("https://a{b}.example.com", "Go's URL parser refuses '{}' in a host"),
    ("https://a b.example.com", "Go's URL parser refuses ' ' in a host"),
    ("https://a.example.com#top", "no path, query or fragment"),
    ("null", "not http:// or https://"),
])
def test_what_go_cannot_parse_keeps_nats_server_from_starting(tmp_path, given, why):
    path, _ = conf(tmp_path / "bad.conf", ["https://ok.example.com", given])
    result = subprocess.run([nats_server_binary(), "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "unable to parse allowed origin" in result.stdout + result.stderr
    with pytest.raises(settings.SettingsError, match=f"nats-fly:websocketOrigins: .*{re.escape(why)}"):
        settings.load({"app": "web", "regions": ["ord"], "websocket": True, "websocketOrigins": [given]})


def test_origins_of_one_host_are_each_let_in(serve):
    origins = settings.load({"app": "web", "regions": ["ord"], "websocket": True, "websocketOrigins": [
        "http://app.example.com:3000", "https://app.example.com"]}).websocket_origins
    port = serve("two", list(origins))
    assert upgrade_status(port, "https://app.example.com") == 101
    assert upgrade_status(port, "http://app.example.com:3000") == 101
    assert upgrade_status(port, "http://app.example.com") == 403
