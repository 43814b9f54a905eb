"""One HTTP POST to the Segmind API, on the standard library, bounded in every way.

- The base URL must be `https://`; plain `http://` only for loopback (tests, a local proxy).
- Redirects are never followed (http.client does not follow them), so the key goes only to
  the configured host.
- The answer is read with a byte cap and must arrive within a total deadline; `Call.abort()`
  (from another thread: the client's watchdog, or cancel) shuts the socket, which wakes a
  read blocked on a slow or silent server.
- An `HTTPS_PROXY` is used through a CONNECT tunnel (the proxy sees only TLS bytes).
"""
import http.client
import ipaddress
import socket
import threading
import time
import urllib.parse
import urllib.request


class TransportError(Exception):
    """The exchange failed: `kind` is 'config', 'connect', 'deadline', 'size', 'aborted' or 'protocol'."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def is_loopback(host):
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def target(base_url):
    """(scheme, host, port, path prefix) of an API base URL; refuses anything but https://
    (or http:// to loopback), before any request."""
    parts = urllib.parse.urlsplit(base_url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        pass
    elif parts.scheme == "http" and host and is_loopback(host):
        pass
    else:
        raise TransportError("config", f"SEGMIND_API_BASE must be an https:// URL (plain http:// only for loopback: "
                                       f"127.0.0.1, localhost, ::1); got {parts.scheme or '?'}://{host or '?'}. "
                                       "Nothing was sent.")
    if parts.username or parts.password:
        raise TransportError("config", "SEGMIND_API_BASE must not carry a user name or password. Nothing was sent.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TransportError("config", f"SEGMIND_API_BASE has an invalid port: {base_url!r}") from None
    return parts.scheme, host, port, parts.path.rstrip("/")


def _tls():
    import ssl

    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


class Call:
    """One POST in flight; `abort()` may be called from any thread at any time."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sock = None
        self.aborted = False
        self.deadline = None  # time.monotonic() by which the whole answer must be in

    def abort(self):
        with self._lock:
            self.aborted = True
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def late(self):
        return self.deadline is not None and time.monotonic() > self.deadline

    def _attach(self, sock):
        with self._lock:
            self._sock = sock
            aborted = self.aborted
        if aborted:
            self.abort()

    def post(self, base, slug, headers, body, connect_timeout, deadline_s, max_bytes):
        """(status, headers {lower name: value}, body bytes). The connection is made within
        `connect_timeout` s; the whole answer must be in `deadline_s` s after that."""
        scheme, host, port, prefix = base
        conn = self._connect(scheme, host, port, connect_timeout)
        try:
            self._attach(conn.sock)
            self.deadline = time.monotonic() + deadline_s
            conn.sock.settimeout(deadline_s)
            try:
                conn.request("POST", f"{prefix}/{slug}", body=body, headers=headers)
                resp = conn.getresponse()
                answer = {k.lower(): v for k, v in resp.getheaders()}
                length = answer.get("content-length", "")
                if length.isdigit() and int(length) > max_bytes:
                    raise TransportError("size", f"the answer announces {int(length)} bytes, over the "
                                                 f"{max_bytes}-byte limit")
                data = bytearray()
                while True:
                    chunk = resp.read1(65536)
                    if not chunk:
                        break
                    data += chunk
                    if len(data) > max_bytes:
                        raise TransportError("size", f"the answer is larger than the {max_bytes}-byte limit")
                    if self.late():
                        raise TransportError("deadline", "the answer did not arrive in time")
                if self.aborted:  # a shut socket reads as the end of the answer: it is not one
                    raise OSError("aborted")
            except (OSError, http.client.HTTPException) as exc:
                if self.aborted and not self.late():
                    raise TransportError("aborted", "the request was stopped") from None
                if self.late() or isinstance(exc, socket.timeout):
                    raise TransportError("deadline", "the answer did not arrive in time") from None
                raise TransportError("protocol", f"the connection broke ({type(exc).__name__})") from None
            return resp.status, answer, bytes(data)
        finally:
            conn.close()

    def _connect(self, scheme, host, port, timeout):
        proxy = _proxy(scheme, host)
        try:
            if scheme == "http":
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            elif proxy:
                conn = http.client.HTTPSConnection(proxy[0], proxy[1], timeout=timeout, context=_tls())
                conn.set_tunnel(host, port)
            else:
                conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=_tls())
            if self.aborted:
                raise TransportError("aborted", "the request was stopped")
            conn.connect()
        except TransportError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            if self.aborted:
                raise TransportError("aborted", "the request was stopped") from None
            slow = isinstance(exc, socket.timeout)
            raise TransportError("connect", f"{'timed out' if slow else type(exc).__name__} connecting to "
                                            f"{host}:{port}" + (f" through the proxy {proxy[0]}" if proxy else "")) \
                from None
        return conn


def _proxy(scheme, host):
    """(host, port) of the HTTPS proxy the environment names for `host`, or None."""
    if scheme != "https" or is_loopback(host) or urllib.request.proxy_bypass(host):
        return None
    url = urllib.request.getproxies().get("https")
    if not url:
        return None
    parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    return (parts.hostname, parts.port or 8080) if parts.hostname else None
