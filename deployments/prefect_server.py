"""The Prefect server of `make serve`: Prefect's own app (API, UI, background services) behind a
check of the Host header.

Why not `prefect server start`: Prefect has no allowed-hosts setting, and a server on loopback
that answers any Host header can be reached from a web page through DNS rebinding (the page's
own name resolved to 127.0.0.1; CSRF tokens do not help, the page fetches one). Requests naming
another host get 400 here, before Prefect sees them.

  python deployments/prefect_server.py --host 127.0.0.1 --port 4200
"""

from __future__ import annotations

import argparse

import uvicorn
from prefect.server.api.server import create_app
from starlette.middleware.trustedhost import TrustedHostMiddleware

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "[::1]"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4200)
    ap.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        help="another name this server answers to (repeatable; default: loopback names)",
    )
    args = ap.parse_args()
    app = TrustedHostMiddleware(
        create_app(final=True), allowed_hosts=LOOPBACK_NAMES + args.allowed_host
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
