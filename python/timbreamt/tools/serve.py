"""`timbreamt serve DIR`: serve a bundle (or any folder with a page) on 127.0.0.1.

The page cannot run from file:// (browsers block module scripts and workers from origin null), so
this is the one command a user needs after `timbreamt bundle`. Cross-origin isolation headers
(COOP/COEP) let onnxruntime-web use threads; ``isolate=False`` serves without them (noteDigger)."""
from __future__ import annotations

import http.server
from functools import partial
from pathlib import Path

from .bundle import BundleError


class Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with the MIME types and (optionally) the cross-origin isolation headers that
    onnxruntime-web needs for threads."""

    isolate = True
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".mjs": "text/javascript", ".js": "text/javascript", ".onnx": "application/octet-stream",
                      ".whl": "application/zip", ".json": "application/json", ".wav": "audio/wav"}

    def end_headers(self) -> None:
        if self.isolate:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:   # quiet: tests and users read stdout
        pass


def make_server(directory: str | Path, port: int = 0, isolate: bool = True) -> http.server.ThreadingHTTPServer:
    """A server of ``directory`` on 127.0.0.1:``port`` (0: any free port), not yet started."""
    d = Path(directory)
    if not d.is_dir():
        raise BundleError(f"{d}: no such folder; build the page with `timbreamt bundle {d}`")
    if not (d / "index.html").is_file() and not any(d.glob("*.html")):
        raise BundleError(f"{d} holds no page: build it with `timbreamt bundle {d}`")
    handler = type("BoundHandler", (Handler,), {"isolate": isolate})
    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port), partial(handler, directory=str(d)))
    except OSError as exc:
        raise BundleError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); choose another --port") from exc


def serve(directory: str | Path, port: int = 8000, isolate: bool = True) -> None:
    server = make_server(directory, port, isolate)
    print(f"serving {Path(directory).resolve()} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C to stop)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
