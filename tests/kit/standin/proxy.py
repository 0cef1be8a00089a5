"""Fly's edge proxy: `<app>.fly.dev:<port>` as one loopback listener per client region.

A connection goes to the least-loaded started Machine of the client's region
whose service checks are not failing; another region (the nearest first) is used only when
that region has none left. Upstream sockets are made in the hub namespace, so the root
namespace needs no link to the Machines.

Handlers of a `[[services.ports]]` port (Fly docs networking/services, "Connection handlers"):
- none: TCP passed through ("If you don't specify handlers, we just forward TCP to your app as-is").
- `["tls"]`: TLS terminated (test CA), plaintext forwarded.
- `["tls", "http"]` (either order; the 443 of `[http_service]`, docs reference/configuration):
  TLS terminated, ALPN `http/1.1`, then the `http` handler.
- `["http"]`: the `http` handler on plaintext; with `force_https` every request gets a 301 to
  https ("all HTTP requests return a redirect response with a 301 status code").
Other handlers (`proxy_proto`, `pg_tls`, ...) are refused by edge(): the stand-in does not serve them.

The `http` handler ("normalizes HTTP connections and sends HTTP 1.1 requests to the application
process") parses each HTTP/1.x request head, adds the headers networking/services and
networking/request-headers name, and forwards it with its body to the Machine's internal_port;
the response comes back the same way. An `Upgrade` request (a browser's `wss://`) answered with
`101 Switching Protocols` becomes a raw two-way pipe (community.fly.io "Fixing an Intermittent
WebSocket Issue": "WebSocket upgrades are HTTP/1.1"). See `_request_head` for the headers.
"""
from __future__ import annotations

import asyncio
import random
import re
import ssl

from .regions import distance
from .state import Machine

# RFC 9110 7.6.1: a proxy removes these, and whatever Connection lists. Transfer-Encoding is
# hop-by-hop too, but bodies are forwarded as they came (a chunked body stays chunked).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}
# Set by Fly's proxy whatever the client sent (Fly-Client-IP, Fly-Forwarded-Port, Fly-Region,
# X-Forwarded-Proto, X-Forwarded-SSL); X-Forwarded-For and Via are appended to.
FLY_SET = {"fly-client-ip", "fly-forwarded-port", "fly-region", "x-forwarded-proto", "x-forwarded-ssl",
           "x-forwarded-for", "via"}
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
MAX_HEAD = 65536
REQUEST_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) (HTTP/\d\.\d)")


def mode(handlers) -> str | None:
    """A port's handlers -> "tcp" | "tls" | "https" | "http", or None (not served by the stand-in)."""
    hs = list(handlers or [])
    if not hs:
        return "tcp"
    if hs == ["tls"]:
        return "tls"
    if sorted(hs) == ["http", "tls"]:
        return "https"
    if hs == ["http"]:
        return "http"
    return None


class HTTPError(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(f"{status} {reason}")
        self.status, self.reason = status, reason


class Head:
    """An HTTP/1.x message head: the start line's three parts and the header fields in order."""

    def __init__(self, start: tuple[str, str, str], headers: list[tuple[str, str]]):
        self.start, self.headers = start, headers

    def get(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name]

    def tokens(self, name: str) -> list[str]:
        return [t.strip().lower() for v in self.get(name) for t in v.split(",") if t.strip()]

    def encode(self) -> bytes:
        lines = [" ".join(self.start)] + [f"{n}: {v}" for n, v in self.headers]  # "HTTP/1.1 200 " is valid
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_head(reader: asyncio.StreamReader, request: bool) -> Head | None:
    """The next message head; None at a clean end of the stream before one began. Lines end in
    CRLF or a bare LF (RFC 9112 2.2 lets a recipient take LF alone); empty lines before a
    request line are skipped (also 2.2)."""
    lines: list[str] = []
    size = 0
    while True:
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            if lines or e.partial.strip():
                raise HTTPError(400 if request else 502, "Bad Request" if request else "Bad Gateway") from None
            return None
        except asyncio.LimitOverrunError:
            raise HTTPError(431, "Request Header Fields Too Large") from None
        size += len(raw)
        if size > MAX_HEAD:
            raise HTTPError(431, "Request Header Fields Too Large")
        line = raw.decode("latin-1").rstrip("\n").removesuffix("\r")
        if line:
            lines.append(line)
        elif lines:
            break
    if request:
        m = REQUEST_LINE.fullmatch(lines[0])
        if not m:
            raise HTTPError(400, "Bad Request")
        if m.group(3) not in ("HTTP/1.1", "HTTP/1.0"):
            raise HTTPError(505, "HTTP Version Not Supported")
        start = (m.group(1), m.group(2), m.group(3))
    else:
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not re.fullmatch(r"\d{3}", parts[1]):
            raise HTTPError(502, "Bad Gateway")
        start = (parts[0], parts[1], parts[2] if len(parts) > 2 else "")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not TOKEN.fullmatch(name):  # also obs-fold and a space before the colon
            raise HTTPError(400 if request else 502, "Bad Request" if request else "Bad Gateway")
        headers.append((name, value.strip(" \t")))
    return Head(start, headers)


def request_framing(req: Head) -> int | str:
    """RFC 9112 6.3: "chunked" or the body's length (0: none)."""
    te = req.tokens("transfer-encoding")
    if te:
        if te[-1] != "chunked":
            raise HTTPError(400, "Bad Request")
        return "chunked"
    lengths = set(req.tokens("content-length"))
    if not lengths:
        return 0
    if len(lengths) != 1 or not next(iter(lengths)).isdigit():
        raise HTTPError(400, "Bad Request")
    return int(lengths.pop())


def response_framing(resp: Head, method: str) -> int | str:
    """RFC 9112 6.3: 0, a length, "chunked", or "close" (the body ends with the connection)."""
    status = int(resp.start[1])
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return 0
    te = resp.tokens("transfer-encoding")
    if te:
        return "chunked" if te[-1] == "chunked" else "close"
    lengths = set(resp.tokens("content-length"))
    if not lengths:
        return "close"
    if len(lengths) != 1 or not next(iter(lengths)).isdigit():
        raise HTTPError(502, "Bad Gateway")
    return int(lengths.pop())


async def copy_body(src: asyncio.StreamReader, dst: asyncio.StreamWriter, framing: int | str) -> None:
    if framing == "close":
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        return
    if framing == "chunked":
        while True:
            line = await src.readuntil(b"\r\n")
            size = line[:-2].split(b";", 1)[0].strip(b" \t")
            if not CHUNK_SIZE.fullmatch(size):
                raise HTTPError(400, "Bad Request")
            dst.write(line)
            if int(size, 16) == 0:
                while (trailer := await src.readuntil(b"\r\n")) != b"\r\n":
                    dst.write(trailer)
                dst.write(b"\r\n")
                await dst.drain()
                return
            await copy_body(src, dst, int(size, 16) + 2)  # the data and its CRLF
    n = framing
    while n > 0:
        data = await src.read(min(n, 65536))
        if not data:
            raise ConnectionError("the body ended early")
        dst.write(data)
        await dst.drain()
        n -= len(data)


async def reply(writer: asyncio.StreamWriter, status: int, reason: str, close: bool,
                headers: tuple[tuple[str, str], ...] = ()) -> None:
    """A response of the proxy's own, without a body."""
    fields = [*headers, ("Content-Length", "0"), *((("Connection", "close"),) if close else ())]
    writer.write(Head(("HTTP/1.1", str(status), reason), list(fields)).encode())
    await writer.drain()


class Discard:
    """A writer that drops what it is given."""

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass


class Upstream:
    """A connection to a Machine; it counts towards the Machine's load while open."""

    def __init__(self, proxy: "Proxy", machine_id: str, reader, writer):
        self.proxy, self.machine_id, self.reader, self.writer = proxy, machine_id, reader, writer
        self.open = True
        self.open_after = True  # False: the Machine closes it after this response
        proxy.load[machine_id] = proxy.load.get(machine_id, 0) + 1

    def close(self) -> None:
        if self.open:
            self.open = False
            self.proxy.load[self.machine_id] -= 1
            self.writer.close()


class Proxy:
    def __init__(self, daemon, cert: str, key: str):
        self.daemon = daemon
        self.listeners: dict[tuple[str, str, int], tuple[asyncio.base_events.Server, int, str]] = {}
        self.load: dict[str, int] = {}
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(cert, key)
        # tls + http: HTTP/1.1 only (Fly also offers h2 and speaks HTTP/1.1 to the app).
        self.tls_http = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls_http.load_cert_chain(cert, key)
        self.tls_http.set_alpn_protocols(["http/1.1"])

    def _service(self, app: str, port: int) -> tuple[dict, dict] | None:
        release = self.daemon.state.apps[app].complete_release() if app in self.daemon.state.apps else None
        if release is None:
            return None
        from .flytoml import services
        for svc in services(release.config):
            for p in svc["ports"]:
                if p["port"] == port:
                    return svc, p
        return None

    async def edge(self, app: str, region: str, port: int) -> tuple[str, int]:
        if app not in self.daemon.state.apps:
            raise LookupError(f"{app}.fly.dev does not resolve: no such app")
        if not self.daemon.state.apps[app].ips:
            raise LookupError(f"{app}.fly.dev does not resolve: the app has no public IPs")
        found = self._service(app, port)
        if found is None:
            raise LookupError(f"{app} has no deployed [[services.ports]] port {port}")
        handlers = found[1].get("handlers", [])
        kind = mode(handlers)
        if kind is None:
            raise LookupError(f"the stand-in's proxy does not serve handlers = {handlers} (port {port} of {app}); "
                              'it serves none, ["tls"], ["tls", "http"] and ["http"]')
        key = (app, region, port)
        if key in self.listeners and self.listeners[key][2] != kind:  # a deploy changed the handlers
            self.listeners.pop(key)[0].close()
        if key not in self.listeners:
            tls = {"tls": self.tls, "https": self.tls_http}.get(kind)
            server = await asyncio.start_server(
                lambda r, w: self._serve(app, region, port, kind, r, w), "127.0.0.1", 0, ssl=tls,
                ssl_handshake_timeout=10 if tls else None)
            self.listeners[key] = (server, server.sockets[0].getsockname()[1], kind)
        return "127.0.0.1", self.listeners[key][1]

    def forget(self, app: str) -> None:
        for key in [k for k in self.listeners if k[0] == app]:
            self.listeners.pop(key)[0].close()

    def close(self) -> None:
        for server, _port, _kind in self.listeners.values():
            server.close()
        self.listeners.clear()

    def candidates(self, app: str, region: str, internal_port: int, hard_limit, soft_limit) -> list[Machine]:
        runtime = self.daemon.runtime
        up = [m for m in self.daemon.state.app_machines(app)
              if m.state == "started" and runtime.routable(m)
              and any(s["internal_port"] == internal_port for s in m.config.get("services", []))
              and (hard_limit is None or self.load.get(m.id, 0) < hard_limit)]

        def rank(m: Machine):
            n = self.load.get(m.id, 0)
            return (distance(region, m.region), n >= soft_limit, n, random.random())
        local = sorted((m for m in up if m.region == region), key=rank)
        return local or sorted(up, key=rank)

    def _allowed(self, app: str, port: int, handlers: list[str]) -> bool:
        """A dedicated v4 or v6 serves every port. The shared v4 serves HTTP on 80, TLS & HTTP on 443,
        and any port with the tls handler (docs networking/services "Shared IPv4"; fly.md 1.7)."""
        kinds = {ip.type for ip in self.daemon.state.apps[app].ips}
        if kinds & {"v4", "v6"}:
            return True
        return "shared_v4" in kinds and ("tls" in handlers or (port == 80 and list(handlers) == ["http"]))

    def _public_ip(self, app: str) -> str:
        """The app's address a client of the (IPv4) loopback listener stands for: its dedicated v4,
        else the shared v4, else its v6."""
        ips = self.daemon.state.apps[app].ips
        for kind in ("v4", "shared_v4", "v6"):
            for ip in ips:
                if ip.type == kind:
                    return ip.address
        return ""

    async def _dial(self, app: str, region: str, svc: dict) -> Upstream | None:
        conc = svc["concurrency"]
        for m in self.candidates(app, region, svc["internal_port"], conc.get("hard_limit"),
                                 conc.get("soft_limit") or 20):
            try:
                reader, writer = await self.daemon.runtime.connect(m.private_ipv4, svc["internal_port"], 2.0)
            except (OSError, asyncio.TimeoutError):
                continue
            return Upstream(self, m.id, reader, writer)
        return None

    def _current(self, app: str, port: int, kind: str) -> tuple[dict, dict] | None:
        """The port's service as deployed now, if it is still served as `kind` from this app's IPs."""
        found = self._service(app, port) if app in self.daemon.state.apps else None
        if found is None or mode(found[1].get("handlers")) != kind \
                or not self._allowed(app, port, found[1].get("handlers", [])):
            return None
        return found

    async def _serve(self, app: str, region: str, port: int, kind: str, reader, writer) -> None:
        upstream = None
        try:
            found = self._current(app, port, kind)
            if found is None:
                return
            if kind in ("http", "https"):
                await self._http(app, region, port, kind == "https", reader, writer)
                return
            upstream = await self._dial(app, region, found[0])
            if upstream:
                await self._pipe(reader, writer, upstream.reader, upstream.writer)
        except (ConnectionError, ssl.SSLError, OSError, EOFError, HTTPError,
                asyncio.LimitOverrunError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()
            if upstream:
                upstream.close()

    # --- the http handler ---

    def _request_head(self, req: Head, app: str, region: str, port: int, tls: bool, peer: str,
                      upgrade: bool) -> Head:
        """The request as the Machine gets it: HTTP/1.1, hop-by-hop fields dropped (the upgrade
        kept), and the headers of docs networking/services ("The HTTP handler adds...") and
        networking/request-headers:
        - Fly-Client-IP: the address Fly accepted the connection from;
        - X-Forwarded-For: the client's list, then that address, then "the last address (rightmost)
          in this list will be a shared or dedicated IP address assigned to your app";
        - X-Forwarded-Proto `http`|`https`, X-Forwarded-SSL `on`|`off`;
        - X-Forwarded-Port: the public port unless the client set it ("may be set by client");
        - Fly-Forwarded-Port: the public port ("always set by Fly.io"); Fly-Region: the edge's region;
        - Via: appended `<version> fly.io` (request-headers: "`2 fly.io`" for HTTP/2).
        Fly-Preferred-Instance-Unavailable goes only with Fly-Prefer-Instance-Id, which the stand-in
        does not route by; no other header (Fly-Request-Id...) is named as a request header there."""
        method, target, version = req.start
        drop = HOP_BY_HOP | set(req.tokens("connection")) | FLY_SET
        if req.get("transfer-encoding"):
            drop.add("content-length")  # RFC 9112 6.3: Transfer-Encoding overrides it
        fields = [(n, v) for n, v in req.headers if n.lower() not in drop]
        if upgrade:
            fields += [("Connection", "Upgrade"), ("Upgrade", ", ".join(req.get("upgrade")))]
        fields += [
            ("Fly-Client-IP", peer),
            ("X-Forwarded-For", ", ".join([*req.get("x-forwarded-for"), peer, self._public_ip(app)])),
            ("X-Forwarded-Proto", "https" if tls else "http"),
            ("X-Forwarded-SSL", "on" if tls else "off"),
            *([] if req.get("x-forwarded-port") else [("X-Forwarded-Port", str(port))]),
            ("Fly-Forwarded-Port", str(port)),
            ("Fly-Region", region),
            ("Via", ", ".join([*req.get("via"), f"{version[5:]} fly.io"])),
        ]
        return Head((method, target, "HTTP/1.1"), fields)

    @staticmethod
    def _response_head(resp: Head, close: bool, upgraded: bool = False) -> Head:
        drop = HOP_BY_HOP | set(resp.tokens("connection")) | {"via"}
        fields = [(n, v) for n, v in resp.headers if n.lower() not in drop]
        if upgraded:
            fields += [("Connection", "Upgrade"), ("Upgrade", ", ".join(resp.get("upgrade")))]
        elif close:
            fields.append(("Connection", "close"))
        fields.append(("Via", ", ".join([*resp.get("via"), f"{resp.start[0][5:]} fly.io"])))
        return Head(resp.start, fields)

    async def _http(self, app: str, region: str, port: int, tls: bool, client_r, client_w) -> None:
        """Requests in turn on one client connection (keep-alive); one Machine connection at a time,
        dialled for the first request and again after the Machine closed its own."""
        peer = client_w.get_extra_info("peername")[0]
        up: Upstream | None = None
        try:
            while True:
                try:
                    req = await read_head(client_r, request=True)
                    if req is None:
                        return
                    if len(req.get("host")) != 1:
                        raise HTTPError(400, "Bad Request")
                    framing = request_framing(req)
                except HTTPError as e:
                    await reply(client_w, e.status, e.reason, close=True)
                    return
                found = self._current(app, port, "https" if tls else "http")
                if found is None:
                    return
                svc, p = found
                method, target, version = req.start
                conn = req.tokens("connection")
                close = "close" in conn or (version == "HTTP/1.0" and "keep-alive" not in conn)
                if p.get("force_https") and not tls:
                    host = re.sub(r":\d+$", "", req.get("host")[0])
                    await copy_body(client_r, Discard(), framing)  # the body the redirect makes moot
                    await reply(client_w, 301, "Moved Permanently", close, (("Location", f"https://{host}{target}"),))
                    if close:
                        return
                    continue
                upgrade = "upgrade" in conn and bool(req.get("upgrade"))
                if up is None:
                    up = await self._dial(app, region, svc)
                    if up is None:
                        await reply(client_w, 502, "Bad Gateway", close=True)
                        return
                up.writer.write(self._request_head(req, app, region, port, tls, peer, upgrade).encode())
                send = asyncio.create_task(copy_body(client_r, up.writer, framing))
                try:
                    if not await self._exchange(up, send, method, upgrade, close, client_r, client_w):
                        return
                finally:
                    if not send.done():
                        send.cancel()
                if not up.open_after or up.reader.at_eof():
                    up.close()
                    up = None
        finally:
            if up:
                up.close()

    async def _exchange(self, up: Upstream, send: asyncio.Task, method: str, upgrade: bool, close: bool,
                        client_r, client_w) -> bool:
        """One response (after any 1xx) from the Machine to the client, while `send` forwards the
        request body. -> whether the client connection takes another request."""
        try:
            while True:  # interim 1xx responses (100 Continue) go through as they come
                resp = await read_head(up.reader, request=False)
                if resp is None:
                    raise ConnectionError("the Machine closed the connection")
                status = int(resp.start[1])
                if status == 101 or not 100 <= status < 200:
                    break
                client_w.write(self._response_head(resp, close=False).encode())
                await client_w.drain()
            if status == 101 and not upgrade:
                raise HTTPError(502, "Bad Gateway")
            body = response_framing(resp, method)
        except (ConnectionError, OSError, HTTPError, EOFError, asyncio.LimitOverrunError):
            await reply(client_w, 502, "Bad Gateway", close=True)
            return False
        if status == 101:  # the upgrade: bytes flow both ways as they are from here on
            await send
            client_w.write(self._response_head(resp, close=False, upgraded=True).encode())
            await client_w.drain()
            await self._pipe(client_r, client_w, up.reader, up.writer)
            return False
        up_conn = resp.tokens("connection")
        if body == "close" or "close" in up_conn or (resp.start[0] == "HTTP/1.0" and "keep-alive" not in up_conn):
            up.open_after = False
        close = close or body == "close"
        client_w.write(self._response_head(resp, close).encode())
        await copy_body(up.reader, client_w, body)
        await client_w.drain()
        await send
        return not close

    @staticmethod
    async def _pipe(client_r, client_w, up_r, up_w) -> None:
        """Copy both ways; when either side goes, the connection goes (NATS never half-closes)."""
        async def copy(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError, ssl.SSLError):
                pass
        tasks = [asyncio.create_task(copy(client_r, up_w)), asyncio.create_task(copy(up_r, client_w))]
        _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
