#!/usr/bin/env python3
"""A real FTP (and optionally explicit FTPS) server for tests and local runs.

Built on pyftpdlib (scripts/requirements.txt). One user with full rights on
one root directory, passive data connections on loopback ports.

Integration tests spawn it as a child process and wait for its ready line on
stdout, which carries the port actually bound (pass ``--port 0`` to let the
kernel pick a free one):

    FTP server ready host=127.0.0.1 port=40123 root=/tmp/x pid=4242

The password is read from ``--password`` or, to keep it out of the process
list, from the environment variable named by ``--password-env``
(default ``FTP_PASSWORD``). SIGTERM and SIGINT stop the server cleanly.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

# Every right: list, retrieve, store, append, delete, rename, mkdir, chmod, mtime.
FULL_PERMISSIONS = "elradfmwMT"


def parse_port_range(text: str) -> range:
    """Parses ``LOW-HIGH`` (inclusive) into a range of passive ports."""
    try:
        low_text, high_text = text.split("-", 1)
        low, high = int(low_text), int(high_text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH, got {text!r}") from err
    if not 1024 <= low <= high <= 65535:
        raise argparse.ArgumentTypeError(f"bad passive port range {text!r}")
    return range(low, high + 1)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=2121, help="control port; 0 picks a free one")
    parser.add_argument("--root", required=True, help="directory served as the user's home")
    parser.add_argument("--user", required=True, help="the one user name")
    parser.add_argument("--password", help="its password (prefer --password-env)")
    parser.add_argument(
        "--password-env",
        default="FTP_PASSWORD",
        help="environment variable holding the password when --password is absent",
    )
    parser.add_argument(
        "--passive-ports",
        type=parse_port_range,
        help="passive data port range LOW-HIGH (default: any free port)",
    )
    parser.add_argument("--certfile", help="PEM certificate (and key) to offer explicit FTPS (AUTH TLS)")
    parser.add_argument("--keyfile", help="PEM private key when not in --certfile")
    parser.add_argument(
        "--tls-required",
        action="store_true",
        help="with --certfile: refuse login and transfers without TLS",
    )
    parser.add_argument(
        "--max-cons-per-ip",
        type=int,
        default=0,
        help="sessions one client address may hold at once, as real servers cap them (default 0: unlimited)",
    )
    parser.add_argument("--log-file", help="write the server's log here (default stderr)")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    args = parser.parse_args(argv)
    if args.password is None:
        args.password = os.environ.get(args.password_env)
        if not args.password:
            parser.error(f"no --password and ${args.password_env} is empty")
    return args


def build_handler(args: argparse.Namespace) -> type[FTPHandler]:
    authorizer = DummyAuthorizer()
    authorizer.add_user(args.user, args.password, args.root, perm=FULL_PERMISSIONS)

    if args.certfile:
        try:
            from pyftpdlib.handlers import TLS_FTPHandler
        except ImportError as err:  # pyOpenSSL missing
            raise SystemExit(f"FTPS needs pyOpenSSL: {err}") from err

        class Handler(TLS_FTPHandler):
            pass

        Handler.certfile = args.certfile
        if args.keyfile:
            Handler.keyfile = args.keyfile
        Handler.tls_control_required = args.tls_required
        Handler.tls_data_required = args.tls_required
    else:

        class Handler(FTPHandler):
            pass

    Handler.authorizer = authorizer
    Handler.banner = "medlake test FTP server"
    Handler.permit_foreign_addresses = False
    if args.passive_ports is not None:
        Handler.passive_ports = args.passive_ports
    return Handler


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    root = os.path.abspath(args.root)
    os.makedirs(root, exist_ok=True)
    args.root = root

    logging.basicConfig(
        filename=args.log_file,
        level=logging.WARNING if args.quiet else logging.INFO,
        format="[%(asctime)s] %(levelname)s %(message)s",
    )

    server = FTPServer((args.host, args.port), build_handler(args))
    server.max_cons = 256
    # 0 (the default) is unlimited: every test client is 127.0.0.1.
    server.max_cons_per_ip = args.max_cons_per_ip

    def stop(signum: int, _frame: object) -> None:
        logging.info("signal %d: stopping", signum)
        server.close_all()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    host, port = server.socket.getsockname()[:2]
    print(f"FTP server ready host={host} port={port} root={root} pid={os.getpid()}", flush=True)
    server.serve_forever(handle_exit=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
