#!/usr/bin/env python3
"""A real FTP (and optionally explicit FTPS) server for tests and local runs.

Built on pyftpdlib (scripts/requirements.txt). One user with full rights on
one root directory (the connector's account), passive data connections on
loopback ports, and optionally one account per facility (``--account``),
each confined to its own folder: a facility can neither see nor write
another's files, so the folder a file lands in is the facility that sent it.

For a landing server facing facilities, run it with ``--self-signed DIR
--tls-required`` (or ``--certfile``): logins and files then travel only
inside TLS. ``--self-signed`` writes a private CA ``DIR/ftp-ca.pem`` (what
clients trust: the connector's ``ca_file``) and the server's certificate and
key signed by it, once, for the host names of ``--tls-hostname``.

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
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="USER:FOLDER:PASSWORD_ENV",
        help="a facility's account, confined to FOLDER (relative to --root, created if missing), "
        "its password in $PASSWORD_ENV; repeat for each facility",
    )
    parser.add_argument("--certfile", help="PEM certificate (and key) to offer explicit FTPS (AUTH TLS)")
    parser.add_argument(
        "--self-signed",
        metavar="DIR",
        help="create (once) a private CA (DIR/ftp-ca.pem) and serve a certificate it signed",
    )
    parser.add_argument(
        "--publish-cert",
        metavar="PATH",
        help="with --self-signed: copy the CA certificate (no key) here for clients to trust",
    )
    parser.add_argument(
        "--tls-hostname",
        action="append",
        default=[],
        help="host name the --self-signed certificate is for (repeatable; default localhost)",
    )
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
    args.accounts = [parse_account(parser, text) for text in args.account]
    if args.self_signed and args.certfile:
        parser.error("--self-signed and --certfile exclude each other")
    if args.password is None:
        args.password = os.environ.get(args.password_env)
        if not args.password:
            parser.error(f"no --password and ${args.password_env} is empty")
    return args


def parse_account(parser: argparse.ArgumentParser, text: str) -> tuple[str, str, str]:
    """``USER:FOLDER:PASSWORD_ENV`` into (user, folder, password)."""
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        parser.error(f"--account {text!r}: expected USER:FOLDER:PASSWORD_ENV")
    user, folder, password_env = parts
    password = os.environ.get(password_env)
    if not password:
        parser.error(f"--account {user}: ${password_env} is empty")
    return user, folder.strip("/"), password


def self_signed(directory: str, hostnames: list[str]) -> tuple[str, str]:
    """The certificate and key files in `directory`, created on first use:
    a private CA (``ftp-ca.pem``, what clients trust) and the server's
    certificate signed by it (``ftp-cert.pem``, ``ftp-key.pem``). TLS
    clients such as rustls refuse a CA certificate as a server's own, hence
    two."""
    ca_path = os.path.join(directory, "ftp-ca.pem")
    cert_path = os.path.join(directory, "ftp-cert.pem")
    key_path = os.path.join(directory, "ftp-key.pem")
    if all(os.path.exists(p) for p in (ca_path, cert_path, key_path)):
        return cert_path, key_path
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    names = hostnames or ["localhost"]
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.timezone.utc)
    days = datetime.timedelta(days=825)

    def certificate(subject, issuer, public_key, signing_key, extensions):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + days)
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "landing FTP server CA")])
    ca = certificate(
        ca_name,
        ca_name,
        ca_key.public_key(),
        ca_key,
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),
        ],
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]),
        ca_name,
        key.public_key(),
        ca_key,
        [
            (x509.SubjectAlternativeName(alt_names), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        ],
    )
    os.makedirs(directory, exist_ok=True)
    with open(key_path, "wb") as out:
        os.chmod(key_path, 0o600)
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as out:
        out.write(server.public_bytes(serialization.Encoding.PEM))
    with open(ca_path, "wb") as out:
        out.write(ca.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def build_handler(args: argparse.Namespace) -> type[FTPHandler]:
    authorizer = DummyAuthorizer()
    authorizer.add_user(args.user, args.password, args.root, perm=FULL_PERMISSIONS)
    for user, folder, password in args.accounts:
        home = os.path.join(args.root, folder)
        os.makedirs(home, exist_ok=True)
        # Everything but chmod, inside its own folder only (pyftpdlib keeps a
        # user below its home).
        authorizer.add_user(user, password, home, perm="elradfmwT")

    if args.self_signed:
        args.certfile, args.keyfile = self_signed(args.self_signed, args.tls_hostname)
        if args.publish_cert:
            import shutil

            os.makedirs(os.path.dirname(os.path.abspath(args.publish_cert)), exist_ok=True)
            ca = os.path.join(args.self_signed, "ftp-ca.pem")
            shutil.copyfile(ca, args.publish_cert)

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
