"""What a web request contributes to events: pure functions, no threads, no I/O, no framework.

The WSGI and ASGI middlewares (and the Django/Flask/Starlette adapters on them) read a request's
properties here. Only these leave the request (see docs/integrations.md):

- `$current_url` (scheme, host and path; never the query string, which often carries tokens),
  `$host`, `$pathname`, `$request_method`, `$user_agent`;
- `$ip`: the peer address, or the client hop of `X-Forwarded-For` when the peer is one of the
  proxies the app trusts (`trusted_proxies`);
- PostHog's tracing headers, as the frontend SDKs send them: `X-POSTHOG-DISTINCT-ID` ->
  `distinct_id`, `X-POSTHOG-SESSION-ID` -> `$session_id`, `X-POSTHOG-WINDOW-ID` -> `$window_id`.

Never cookies, `Authorization`, other headers or the body. Every value from the client is
cleaned: control characters removed, trimmed, cut to `MAX_VALUE_CHARS`; a value that is empty
after that (or not text) is left out, never an error.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from phactor.errors import ConfigError

__all__ = [
    "MAX_PATH_CHARS",
    "MAX_VALUE_CHARS",
    "TrustedProxies",
    "asgi_properties",
    "clean",
    "clean_distinct_id",
    "is_expected_http_error",
    "wsgi_properties",
]

#: Longest header value kept (characters, after cleaning).
MAX_VALUE_CHARS = 1000
#: Longest path kept in `$pathname` / `$current_url`.
MAX_PATH_CHARS = 2048

# C0 controls, DEL and C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

# Tracing headers: (WSGI environ key, ASGI header name, context key).
_TRACING = (
    ("HTTP_X_POSTHOG_DISTINCT_ID", b"x-posthog-distinct-id", "distinct_id"),
    ("HTTP_X_POSTHOG_SESSION_ID", b"x-posthog-session-id", "$session_id"),
    ("HTTP_X_POSTHOG_WINDOW_ID", b"x-posthog-window-id", "$window_id"),
)
_ASGI_WANTED = frozenset(
    {b"host", b"user-agent", b"x-forwarded-for"} | {name for _, name, _ in _TRACING}
)
_DEFAULT_PORTS = {("http", "80"), ("https", "443"), ("ws", "80"), ("wss", "443")}


def clean(value: Any, limit: int = MAX_VALUE_CHARS) -> str | None:
    """`value` without control characters, trimmed and cut to `limit`; None if nothing is left
    or it is not a str."""
    if type(value) is not str:
        return None
    if not value.isascii() or not value.isprintable():
        value = _CONTROL.sub("", value)
    value = value.strip()[:limit].strip()
    return value or None


def clean_distinct_id(value: Any) -> str | None:
    """A distinct_id from a header or the app's callback, or None when it is not usable.

    str (cleaned), int (not bool) and uuid.UUID are accepted, as `capture()` accepts them.
    """
    if type(value) is str:
        return clean(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return None


class TrustedProxies:
    """The proxies whose `X-Forwarded-For` the app believes (addresses or networks).

    The client's address is found walking the header from the right (the hop nearest to us)
    past every trusted proxy; when every hop is trusted, the first hop is the client. A header
    with a malformed hop is ignored (the peer address is used).
    """

    __slots__ = ("_networks",)

    def __init__(self, proxies: Iterable[str], option: str = "trusted_proxies"):
        if isinstance(proxies, (str, bytes)) or not isinstance(proxies, Iterable):
            raise ConfigError(option, "a list of IP addresses or networks", proxies)
        networks = []
        for proxy in proxies:
            if not isinstance(proxy, str):
                raise ConfigError(option, "a list of IP addresses or networks", proxy)
            try:
                networks.append(ipaddress.ip_network(proxy.strip(), strict=False))
            except ValueError:
                raise ConfigError(option, "a list of IP addresses or networks", proxy) from None
        self._networks = tuple(networks)

    @property
    def networks(self) -> tuple[str, ...]:
        """The trusted networks, as text."""
        return tuple(str(net) for net in self._networks)

    def trusts(self, address: str) -> bool:
        ip = _parse_ip(address)
        return ip is not None and any(ip in net for net in self._networks)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client's address: from `forwarded_for` only when `peer` is a trusted proxy."""
        if not forwarded_for or peer is None or not self.trusts(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        parsed = [_parse_ip(hop) for hop in hops]
        if any(ip is None for ip in parsed):
            return peer
        for ip in reversed(parsed):
            assert ip is not None
            if not any(ip in net for net in self._networks):
                return str(ip)
        return str(parsed[0])


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:8080"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "1.2.3.4:5678"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _url(scheme: str | None, host: str | None, path: str | None) -> str | None:
    if scheme and host and path:
        return f"{scheme}://{host}{path}"
    return None


def wsgi_properties(
    environ: Mapping[str, Any], trusted: TrustedProxies | None, tracing_headers: bool = True
) -> dict[str, Any]:
    """The context a WSGI request contributes (see the module docstring)."""
    props: dict[str, Any] = {}
    get = environ.get
    method = clean(get("REQUEST_METHOD"), 32)
    if method:
        props["$request_method"] = method
    script, info = get("SCRIPT_NAME", ""), get("PATH_INFO", "")
    path = script + info if type(script) is str and type(info) is str else ""
    if not path.isascii():
        # PEP 3333: the path arrives as latin-1 decoded bytes; browsers send UTF-8.
        try:
            path = path.encode("latin-1").decode("utf-8", "replace")
        except UnicodeEncodeError:
            pass
    path = clean(path, MAX_PATH_CHARS) or "/"
    props["$pathname"] = path
    scheme = clean(get("wsgi.url_scheme"), 16)
    host = clean(get("HTTP_HOST"))
    if host is None:
        name, port = clean(get("SERVER_NAME")), clean(get("SERVER_PORT"), 8)
        if name:
            host = name if not port or (scheme, port) in _DEFAULT_PORTS else f"{name}:{port}"
    if host:
        props["$host"] = host
    url = _url(scheme, host, path)
    if url:
        props["$current_url"] = url
    agent = clean(get("HTTP_USER_AGENT"))
    if agent:
        props["$user_agent"] = agent
    peer = clean(get("REMOTE_ADDR"), 64)
    ip = trusted.client_ip(peer, clean(get("HTTP_X_FORWARDED_FOR"))) if trusted else peer
    if ip:
        props["$ip"] = ip
    if tracing_headers:
        for key, _, prop in _TRACING:
            value = clean(get(key))
            if value:
                props[prop] = value
    return props


def asgi_properties(
    scope: Mapping[str, Any], trusted: TrustedProxies | None, tracing_headers: bool = True
) -> dict[str, Any]:
    """The context an ASGI `http` scope contributes (see the module docstring)."""
    props: dict[str, Any] = {}
    headers: dict[bytes, str] = {}
    raw = scope.get("headers") or ()
    for item in raw:
        try:
            name, value = item
            name = bytes(name).lower()
        except (TypeError, ValueError):
            continue
        if name not in _ASGI_WANTED or not isinstance(value, (bytes, bytearray)):
            continue
        text = value.decode("latin-1")
        if name == b"x-forwarded-for" and name in headers:
            headers[name] = f"{headers[name]},{text}"  # repeated header: one list of hops
        elif name not in headers and clean(text):
            headers[name] = text  # the first usable value, never a joined identity
    method = clean(scope.get("method"), 32)
    if method:
        props["$request_method"] = method
    path = clean(scope.get("path"), MAX_PATH_CHARS) or "/"
    props["$pathname"] = path
    scheme = clean(scope.get("scheme"), 16) or "http"
    host = clean(headers.get(b"host"))
    if host is None:
        server = scope.get("server")
        if isinstance(server, (list, tuple)) and len(server) == 2:
            name, port = clean(server[0]), server[1]
            if name:
                if ":" in name and not name.startswith("["):
                    name = f"[{name}]"
                host = name if port is None or (scheme, str(port)) in _DEFAULT_PORTS else (
                    f"{name}:{port}"
                )
    if host:
        props["$host"] = host
    url = _url(scheme, host, path)
    if url:
        props["$current_url"] = url
    agent = clean(headers.get(b"user-agent"))
    if agent:
        props["$user_agent"] = agent
    client = scope.get("client")
    peer = clean(client[0], 64) if isinstance(client, (list, tuple)) and client else None
    ip = trusted.client_ip(peer, clean(headers.get(b"x-forwarded-for"))) if trusted else peer
    if ip:
        props["$ip"] = ip
    if tracing_headers:
        for _, name, prop in _TRACING:
            value = clean(headers.get(name))
            if value:
                props[prop] = value
    return props


# Exceptions apps raise on purpose to answer with a 4xx: not errors to track.
_DJANGO_EXPECTED = frozenset(
    {
        ("django.http.response", "Http404"),
        ("django.core.exceptions", "PermissionDenied"),
        ("django.core.exceptions", "BadRequest"),
        ("django.core.exceptions", "SuspiciousOperation"),
    }
)
_HTTP_EXCEPTION_MODULES = ("werkzeug.", "starlette.", "fastapi.", "litestar.", "quart.")


def is_expected_http_error(exc: BaseException) -> bool:
    """True for an HTTP error the app raised on purpose: Django's `Http404`,
    `PermissionDenied`, `BadRequest`, `SuspiciousOperation`, and a Werkzeug/Starlette (FastAPI,
    ...) `HTTPException` with a status below 500. Decided by class name: no framework import."""
    for cls in type(exc).__mro__:
        module = cls.__module__
        if (module, cls.__name__) in _DJANGO_EXPECTED:
            return True
        if cls.__name__ == "HTTPException" and module.startswith(_HTTP_EXCEPTION_MODULES):
            status = getattr(exc, "status_code", None)
            if status is None:
                status = getattr(exc, "code", None)
            return isinstance(status, int) and status < 500
    return False
