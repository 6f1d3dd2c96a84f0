"""`lstmlm serve`: the web page and JSON API over run folders."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lstmlm.cli.flags import add_which_flag
from lstmlm.config import PRECISIONS


def add_parser(sub: Any) -> None:
    sv = sub.add_parser(
        "serve",
        help="web page and JSON API to sample from trained models",
        description="Serve a page to play with models, and a JSON API (/docs). Model ids are "
        "the run folders' names.",
    )
    sv.add_argument("runs", nargs="+", metavar="RUN", help="run folders to serve")
    sv.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, loopback: this machine only; any "
        "other address is reachable from other machines, with a warning: the server has no "
        "authentication)",
    )
    sv.add_argument("--port", type=_port, default=8000, help="TCP port (default: %(default)s)")
    add_which_flag(sv)
    sv.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: sample with bfloat16 copies of the weights (about 2.7x faster on CPU; "
        "samples differ slightly from fp32 ones) (default: %(default)s)",
    )
    sv.add_argument(
        "--max-prompt-chars",
        type=int,
        default=2000,
        help="longest prompt, in characters; longer: HTTP 413 (default: %(default)s)",
    )
    sv.add_argument(
        "--max-new-tokens-limit",
        type=int,
        default=500,
        help="largest max_new_tokens a request may ask for; more: HTTP 422 (default: %(default)s)",
    )
    sv.add_argument(
        "--max-score-chars",
        type=int,
        default=20_000,
        help="longest text /v1/score accepts, in characters; longer: HTTP 413 "
        "(default: %(default)s)",
    )
    sv.add_argument(
        "--max-concurrent",
        type=int,
        default=2,
        help="model jobs running at once (default: %(default)s)",
    )
    sv.add_argument(
        "--max-queue",
        type=int,
        default=8,
        help="jobs that may wait for a slot, then HTTP 503 (default: %(default)s)",
    )
    sv.add_argument(
        "--rate",
        type=float,
        default=60,
        help="model requests per minute per client, then HTTP 429 (0 = off) (default: %(default)s)",
    )
    sv.add_argument(
        "--burst", type=int, default=None, help="requests at once per client (default: rate/6)"
    )
    sv.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send a request's headers, then the connection is "
        "closed (default: %(default)s)",
    )
    sv.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="info",
        help="server log level (default: %(default)s)",
    )
    sv.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from lstmlm.serving.app import create_app, is_loopback, uvicorn_config
    except ImportError as e:
        raise ValueError(
            f"lstmlm serve needs fastapi and uvicorn ({e.name} is missing): "
            "pip install 'lstmlm[web]'"
        ) from None
    from lstmlm.serving.limits import ServerLimits

    limits = ServerLimits(
        max_prompt_chars=args.max_prompt_chars,
        max_new_tokens_limit=args.max_new_tokens_limit,
        max_score_chars=args.max_score_chars,
        max_concurrent=args.max_concurrent,
        max_queue=args.max_queue,
        rate=args.rate,
        burst=args.burst,
        header_timeout=args.header_timeout,
    ).validate()
    app = create_app(args.runs, limits, args.which, args.precision)
    host = args.host.strip("[]")  # an IPv6 address may come in brackets, as in a URL
    _check_can_listen(host, args.port)
    if not is_loopback(host):
        print(
            f"lstmlm: warning: listening on {args.host}: other machines can reach this "
            "server, and it has no authentication",
            file=sys.stderr,
        )
    shown = "localhost" if is_loopback(host) else host
    if ":" in shown:
        shown = f"[{shown}]"  # an IPv6 address in a URL
    print(
        f"serving {', '.join(app.state.models)} at http://{shown}:{args.port}/ (docs: /docs)",
        file=sys.stderr,
    )
    uvicorn.Server(uvicorn_config(app, host, args.port, args.log_level)).run()
    return 0


def _check_can_listen(host: str, port: int) -> None:
    """ValueError with the reason when `host:port` cannot be listened on (taken, no such
    address), so that the error is one line before the server says it is serving."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ValueError(f"--host {host}: cannot resolve it ({e.strerror or e})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(addr)
        except OSError as e:
            raise ValueError(f"cannot listen on {host} port {port}: {e.strerror or e}") from None


def _port(text: str) -> int:
    """argparse type: a TCP port number, 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, got {text!r}")
    return port
