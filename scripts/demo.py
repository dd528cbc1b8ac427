#!/usr/bin/env python3
"""The pipeline part of `make demo`, run by scripts/demo.sh once it has built
`medlake`, found or started the broker (KAFKA_BROKERS) and made the Python
environment.

  1. checks that the demo's ports are free and replaces the lake (only one
     an earlier demo made: it holds a `.medlake-demo` marker) and the work
     folder; creates topics under a prefix of this run alone;
  2. starts the landing FTP server (127.0.0.1:2199) and the services parser,
     sink, ftp-connector and api-connector (admin 127.0.0.1:19401-19404) with
     config/demo.yaml and the registry config/demo-facilities.yaml, whose
     secrets get demo values here;
  3. generates a slice of a day (`medlake gen`) and delivers the even files by
     FTP, the odd ones by HTTP PUT to the push API (127.0.0.1:18480);
  4. waits until the lake reconciles with the generator's manifest, prints
     the summary and example Spark SQL queries;
  5. the customers' portal: `medlake serve` (127.0.0.1:18490, customers of
     config/demo-customers.yaml) runs a report for a demo customer through
     its API, and the portal's address and the demo tokens are printed. On a
     terminal the portal stays up until Ctrl-C (DEMO_PORTAL_WAIT=0: not);
  6. stops every process it started (connectors, parser, sink, serve, FTP
     server), also on an error or Ctrl-C; on an error the services' last log
     lines are shown.

Logs, generated files and summary.txt go to the work folder. Each option's
default comes from the environment variable named in its help.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from medlake_local import (  # noqa: E402
    FACILITIES, FACILITIES_FILE, FTP_HOST, FTP_PORT, REPO, Delivery, Pipeline, demo_secrets, run_env,
    run_medlake,
)

CONFIG = REPO / "config" / "demo.yaml"
API_ADDR = "127.0.0.1:18480"  # api_connector.listen of config/demo.yaml
SERVICES = ("parser", "sink", "ftp-connector", "api-connector", "serve")  # in starting order
ADMINS = {name: f"127.0.0.1:{19401 + i}" for i, name in enumerate(SERVICES)}
PORTAL_ADDR = "127.0.0.1:18490"  # serve.listen of config/demo.yaml
# Tokens of config/demo-customers.yaml (demo values, stored there as digests).
DEMO_TOKENS = {
    "C001 (F001, F002)": "c001-demo-token-1234",
    "C002 (F003)": "c002-demo-token-1234",
    "analysts (every facility)": "analyst-demo-token-1234",
}
LAKE_MARKER = ".medlake-demo"
PUSH_WORKERS = 1  # one PUT at a time, as a facility's sender would
LOG_TAIL_LINES = 15

SPARK_EXAMPLES = """\
The tables are Delta tables under {lake}, readable by Spark, Trino or any Delta reader:

  {python} scripts/spark_session.py sql \\
    'SELECT facility_id, event_type, count(*) AS encounters
       FROM delta.`{lake}/adt_events` GROUP BY 1, 2 ORDER BY 1, 2'

  {python} scripts/spark_session.py sql \\
    'SELECT l.loinc_code, count(*) AS results, round(avg(l.value_numeric), 2) AS mean
       FROM delta.`{lake}/lab_results` l
       JOIN delta.`{lake}/patients` p ON p.facility_id = l.facility_id AND p.mrn = l.mrn
      GROUP BY 1 ORDER BY 2 DESC'

  {python} scripts/spark_session.py sql \\
    'SELECT error_stage, error_code, file_name FROM delta.`{lake}/_dead_letters`'

Or again from medlake itself (no Kafka needed):
  MEDLAKE_LAKE_URI={lake} {binary} tables summary --ledger-table
"""


def log(message: str) -> None:
    """A timestamped line on stderr, as scripts/lib/common.sh's `log`."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def step(title: str) -> None:
    """The heading of a step on stderr."""
    print(f"\n==> {title}", file=sys.stderr, flush=True)


class DemoError(Exception):
    """A failure explained in one message; with `show_logs`, the last lines
    of the services' logs follow it."""

    def __init__(self, message: str, show_logs: bool = False):
        super().__init__(message)
        self.show_logs = show_logs


def env_setting(name: str, default: str) -> str:
    """An environment variable's value, `default` when unset or empty."""
    return os.environ.get(name) or default


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options; the settings default to their DEMO_* variables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True, help="the medlake binary")
    parser.add_argument("--python", required=True, help="python with pyftpdlib (FTP server, Spark examples)")
    parser.add_argument("--started-at", type=float, default=time.time(),
                        help="when `make demo` started (seconds since the epoch), for the wall time")
    parser.add_argument("--files", type=int, default=env_setting("DEMO_FILES", "48"),
                        help="files to generate (DEMO_FILES, 48)")
    parser.add_argument("--max-zip-bytes", type=int, default=env_setting("DEMO_MAX_ZIP_BYTES", "250000"),
                        help="largest archive generated (DEMO_MAX_ZIP_BYTES, 250000)")
    parser.add_argument("--bad", type=int, default=env_setting("DEMO_BAD", "4"),
                        help="bad files among them (DEMO_BAD, 4)")
    parser.add_argument("--seed", type=int, default=env_setting("DEMO_SEED", "2024"),
                        help="the generator's seed (DEMO_SEED, 2024)")
    parser.add_argument("--timeout-s", type=int, default=env_setting("DEMO_TIMEOUT_S", "300"),
                        help="longest wait for the lake to reconcile (DEMO_TIMEOUT_S, 300)")
    parser.add_argument("--lake", default=env_setting("DEMO_LAKE", str(REPO / "lake")),
                        help="the local lake (DEMO_LAKE, ./lake)")
    parser.add_argument("--dir", default=env_setting("DEMO_DIR", str(REPO / ".demo")),
                        help="work folder: logs and generated files (DEMO_DIR, ./.demo)")
    parser.add_argument("--portal-wait", choices=("auto", "0", "1"), default=env_setting("DEMO_PORTAL_WAIT", "auto"),
                        help="keep the portal up until Ctrl-C at the end: auto (when stdin is a terminal), "
                             "0 or 1 (DEMO_PORTAL_WAIT, auto)")
    parser.add_argument("--keep-running", action="store_true",
                        default=os.environ.get("DEMO_KEEP_RUNNING") == "1",
                        help="leave the services running after a successful run (DEMO_KEEP_RUNNING=1)")
    return parser.parse_args(argv)


def port_open(address: str) -> bool:
    """True when something accepts TCP connections at host:port."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def check_ports() -> None:
    """Fails when one of the demo's ports is taken (another demo running?)."""
    for address in (f"{FTP_HOST}:{FTP_PORT}", API_ADDR, PORTAL_ADDR, *ADMINS.values()):
        if port_open(address):
            port = address.rsplit(":", 1)[1]
            raise DemoError(f"port {port} is in use (another demo still running?): see ss -ltnp 'sport = :{port}'")


def made_by_demo(lake: pathlib.Path) -> bool:
    """True for a lake folder an earlier demo made (or an empty one)."""
    return lake.is_dir() and not lake.is_symlink() and ((lake / LAKE_MARKER).exists() or not any(lake.iterdir()))


def remove(path: pathlib.Path) -> None:
    """`rm -rf path`."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def tail(path: pathlib.Path, lines: int) -> str:
    """The last `lines` lines of a text file."""
    return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])


class Demo:
    """One demo run: its settings, environment and child processes."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.binary = pathlib.Path(args.binary)
        self.lake = pathlib.Path(os.path.abspath(args.lake))
        self.dir = pathlib.Path(os.path.abspath(args.dir))
        self.secrets = demo_secrets("demo", zip_suffix="-2024", old_zip_suffix="-2023")
        self.env = run_env("demo", time.strftime("%Y%m%d%H%M%S"), CONFIG, self.lake, self.secrets)
        self.pipeline = Pipeline(self.binary, self.env, self.dir, log, stop_timeout=30)

    def run(self) -> None:
        """Everything from the safety checks to the printed summary."""
        check_ports()
        self.fresh_folders()
        step(f"topics ({self.env['MEDLAKE_TOPICS__PREFIX']}.*)")
        run_medlake(self.binary, self.env, "topics", "ensure")
        step(f"landing FTP server on {FTP_HOST}:{FTP_PORT}")
        self.pipeline.start_ftp(self.args.python, self.secrets["DEMO_FTP_PASSWORD"])
        step(f"services: {' '.join(SERVICES)}")
        self.pipeline.start_services(ADMINS, ready_timeout=60)
        log("all services ready")
        manifest = self.generate()
        self.deliver(manifest)
        summary = self.reconcile(manifest)
        step("summary")
        print(summary, end="")
        print(f"demo wall time: {int(time.time() - self.args.started_at)}s (lake: {self.lake})", flush=True)
        step("query the tables")
        print(SPARK_EXAMPLES.format(lake=self.lake, python=self.args.python, binary=self.binary), end="", flush=True)
        self.portal()

    def portal(self) -> None:
        """Runs a report as a demo customer through the portal's API, prints
        the portal's address and the demo tokens, and waits for Ctrl-C when
        asked to (or when on a terminal)."""
        step(f"the customers' portal: http://{PORTAL_ADDR}/")
        token = DEMO_TOKENS["C001 (F001, F002)"]
        request = urllib.request.Request(
            f"http://{PORTAL_ADDR}/v1/reports/feed_status", data=b'{"params": {}}', method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.load(response)
        except OSError as error:
            raise DemoError(f"the portal's API did not answer the feed status report: {error}",
                            show_logs=True) from error
        facilities = sorted({row["facility_id"] for row in answer["rows"]})
        log(f"feed status as customer C001: {answer['row_count']} rows (facilities {', '.join(facilities)}) "
            f"in {answer['elapsed_ms']} ms")
        print(f"\nThe portal: http://{PORTAL_ADDR}/  (sign in with a token; the SQL API is POST /v1/query)")
        for who, value in DEMO_TOKENS.items():
            print(f"  {who:<28} token {value}")
        print(f"""
  curl -s -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
    -d '{{"sql": "SELECT facility_id, status, count(*) AS files FROM _files GROUP BY 1, 2"}}' \\
    http://{PORTAL_ADDR}/v1/query
""", flush=True)
        wait = self.args.portal_wait == "1" or (self.args.portal_wait == "auto" and sys.stdin.isatty())
        if wait and not self.args.keep_running:
            log("the portal and the services stay up until Ctrl-C")
            try:
                while all(service.proc.poll() is None for service in self.pipeline.services.values()):
                    time.sleep(1)
                raise DemoError("a service stopped while the portal was up", show_logs=True)
            except KeyboardInterrupt:
                log("stopping")

    def fresh_folders(self) -> None:
        """Replaces the lake (only one the demo made) and the work folder."""
        step(f"fresh lake {self.lake} and work folder {self.dir}")
        if self.lake.exists() and not made_by_demo(self.lake):
            raise DemoError(f"{self.lake} exists and was not made by the demo: move it away or set DEMO_LAKE")
        remove(self.lake)
        remove(self.dir)
        (self.dir / "logs").mkdir(parents=True)
        self.lake.mkdir(parents=True)
        (self.lake / LAKE_MARKER).touch()

    def generate(self) -> pathlib.Path:
        """Writes the demo's files with `medlake gen`; returns the manifest."""
        args = self.args
        step(f"generate a slice of a day: {args.files} files from {len(FACILITIES)} facilities, {args.bad} bad ones")
        data = self.dir / "data"
        run_medlake(self.binary, self.env, "gen", "--out", str(data), "--registry", str(FACILITIES_FILE),
                    "--seed", str(args.seed), "--files", str(args.files),
                    "--max-zip-bytes", str(args.max_zip_bytes), "--bad", str(args.bad))
        return data / "manifest.json"

    def deliver(self, manifest: pathlib.Path) -> None:
        """Even files by FTP (uploaded through the server), odd by HTTP PUT."""
        step("deliver: even files by FTP (landing server), odd files by HTTP PUT (push API)")
        files = json.loads(manifest.read_text())["files"]
        by_ftp, by_http = Delivery(manifest.parent, self.secrets, API_ADDR).deliver(files, PUSH_WORKERS)
        log(f"uploaded {by_ftp} files by FTP and {by_http} by HTTP")

    def reconcile(self, manifest: pathlib.Path) -> str:
        """Waits until the lake matches the manifest; returns the summary
        (also written to summary.txt in the work folder)."""
        timeout = self.args.timeout_s
        step(f"wait until the ledger lists every file and the tables match the manifest (at most {timeout}s)")
        env = dict(self.env, MEDLAKE_LOG__LEVEL="warn")
        try:
            summary = run_medlake(self.binary, env, "tables", "summary", "--manifest", str(manifest),
                                  "--wait-s", str(timeout), capture=True)
        except subprocess.CalledProcessError as error:
            (self.dir / "summary.txt").write_text(error.stdout or "")
            print(error.stdout or "", end="", flush=True)
            raise DemoError("the lake did not reconcile with the manifest (above); "
                            f"logs in {self.dir / 'logs'}", show_logs=True) from error
        (self.dir / "summary.txt").write_text(summary)
        return summary

    def show_logs(self) -> None:
        """The last lines of the log of each service this run started."""
        for name in SERVICES:
            service = self.pipeline.services.get(name)
            if service is not None and service.log_path.exists():
                print(f"--- last lines of {service.log_path}", file=sys.stderr)
                print(tail(service.log_path, LOG_TAIL_LINES), end="", file=sys.stderr, flush=True)

    def finish(self, status: int) -> None:
        """Stops every process started (unless asked to keep them after a
        success); a second Ctrl-C or SIGTERM does not cut this short."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if status == 0 and self.args.keep_running:
            running = [f"{name} pid {s.proc.pid}" for name, s in self.pipeline.services.items()]
            log(f"DEMO_KEEP_RUNNING=1: services left running: {', '.join(running)}; "
                f"FTP server pid {self.pipeline.ftp_server.pid}")
            return
        if status == 0:
            step("stop the services (SIGTERM)")
        self.pipeline.stop()


def terminated(_signum, _frame) -> None:
    """SIGTERM: leave through the cleanup, with the shell's status for it."""
    log("terminated")
    sys.exit(143)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    os.chdir(REPO)  # config/demo.yaml names the schemas and the registry relative to it
    signal.signal(signal.SIGTERM, terminated)
    demo = Demo(args)
    status = 1
    try:
        demo.run()
        status = 0
    except DemoError as error:
        log(f"error: {error}")
        if error.show_logs:
            demo.show_logs()
    except RuntimeError as error:  # a process of the pipeline failed, or a delivery
        log(f"error: {error}")
        demo.show_logs()
    except subprocess.CalledProcessError as error:
        log(f"error: `medlake {' '.join(error.cmd[1:])}` failed (exit status {error.returncode})")
    except OSError as error:  # a missing binary, a folder that cannot be replaced
        log(f"error: {error}")
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    finally:
        demo.finish(status)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
