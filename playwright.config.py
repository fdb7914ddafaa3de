"""Browser settings for the Playwright tests (read by tests/conftest.py with runpy: pytest-playwright
itself never reads this file). Debian's Chromium, no browser download."""

CHROMIUM = "/usr/bin/chromium"

launch_args = {
    "executable_path": CHROMIUM,
    "headless": True,
    "args": [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
    ],
}

context_args = {
    "viewport": {"width": 1280, "height": 900},
    "accept_downloads": True,
}

# Generous: the first Pyodide + onnxruntime-web start costs a few seconds on 2 cores.
default_timeout_ms = 120_000
