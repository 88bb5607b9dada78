"""A file server on 127.0.0.1 for the download tests: no internet is needed or used.

``serve(folder)`` serves ``folder`` over HTTP from a thread and records the path of every GET,
so a test can tell what was downloaded. ``mirror_site(...)`` lays out a folder the way the
public sources are laid out (``mnist/<file>``, ``uci/<name>/data/<file>``) from the real data.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Server:
    """A running server: ``url`` of its root (ending in ``/``) and the GET paths it was asked for."""

    url: str
    requests: list[str] = field(default_factory=list)


@contextmanager
def serve(folder: Path) -> Iterator[Server]:
    """Serve ``folder`` on a free port of 127.0.0.1 until the block ends."""
    server_state = Server(url="")

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            server_state.requests.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args) -> None:  # silence the per-request log on stderr
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    server_state.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def mirror_site(site: Path, *, mnist: Path | None = None, uci: Path | None = None, uci_names=()) -> Path:
    """Link the real files into ``site`` in the public sources' layout; returns ``site``."""
    if mnist is not None:
        (site / "mnist").mkdir(parents=True, exist_ok=True)
        for path in mnist.glob("*.gz"):
            (site / "mnist" / path.name).symlink_to(path)
    for name in uci_names:
        folder = site / "uci" / name / "data"
        folder.mkdir(parents=True, exist_ok=True)
        for path in (uci / name).iterdir():
            (folder / path.name).symlink_to(path)
    return site
