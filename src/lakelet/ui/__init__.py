"""``lakelet ui``: a local, read-only web page on a lake (the ``lakelet[ui]`` extra).

from lakelet.ui import create_app, serve
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import webbrowser
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from lakelet import InvalidArgumentError

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from lakelet import Lake

__all__ = ["LOOPBACK", "create_app", "hosts_for", "is_loopback", "listen", "serve"]

LOOPBACK = "127.0.0.1"
_EXTRA = {"fastapi", "starlette", "pydantic", "uvicorn"}  # what `pip install 'lakelet[ui]'` brings


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def hosts_for(host: str) -> list[str]:
    """The Host a request to a server listening on ``host`` may name besides loopback's: that
    address or name; any, on every address (off loopback the token is what guards it)."""
    try:
        if ipaddress.ip_address(host).is_unspecified:
            return ["*"]
    except ValueError:
        pass
    return [f"[{host}]" if ":" in host else host]


def create_app(lake: Lake, token: str | None = None, hosts: Sequence[str] = ()) -> ASGIApp:
    """The app for one lake: every request must carry ``token`` if one is given, and name in its
    Host header a loopback address, ``localhost`` or one of ``hosts`` ("*": any)."""
    try:
        from ._app import create_app as make
    except ModuleNotFoundError as e:
        if e.name not in _EXTRA:
            raise
        raise InvalidArgumentError(
            f"lakelet ui needs the ui extra ({e.name} is missing): pip install 'lakelet[ui]'"
        ) from None
    return make(lake, token, hosts)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket: bound before the server starts, so a client may connect at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise InvalidArgumentError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    return sock


def serve(
    lake: Lake,
    host: str = LOOPBACK,
    port: int = 8765,
    token: str | None = None,
    open_browser: bool = False,
    announce: Callable[[str], object] = print,
) -> None:
    """Serve the page until interrupted. Off loopback a token is required; one is made if not given."""
    if not is_loopback(host) and not token:
        token = secrets.token_urlsafe(24)
    app = create_app(lake, token, hosts_for(host))
    import uvicorn

    sock = listen(host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/" + (f"?token={token}" if token else "")
    announce(f"lakelet ui for {lake.root} on {url}  (Ctrl-C stops it)")
    if open_browser:
        webbrowser.open(url)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
