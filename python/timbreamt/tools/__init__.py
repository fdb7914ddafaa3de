"""Tools: evaluation against peers, benchmarks, the web bundle and its local server."""
