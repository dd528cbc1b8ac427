"""The local medlake pipeline as child processes, shared by `make demo`
(scripts/demo.py) and `make bench` (scripts/bench.py).

What both need to run the pipeline on this machine against a broker and a
local lake, with the facility registry config/demo-facilities.yaml:

  demo_secrets     the secrets that registry names (made-up values, never real)
  run_env          the environment of one run: fresh topics, transactional id
                   and sink consumer group
  run_medlake      a `medlake` command (topics ensure, gen, tables summary)
  Pipeline         the landing FTP server (scripts/ftp_server.py) and the
                   `medlake <service>` processes of a run; stops them all
  Service          one service: readiness, Prometheus metrics, CPU and peak
                   RSS from /proc
  Delivery         a generated data set's files to the pipeline: even indexes
                   by FTP, odd indexes by HTTP PUT to the push API
  wait_for         polls a condition while the services stay alive
  parse_metrics, metric_sum, histogram_quantiles
                   arithmetic on the Prometheus text of /metrics

Standard library only; the FTP server itself runs on the project's Python
environment (pyftpdlib), given as `python`.
"""

from __future__ import annotations

import concurrent.futures
import ftplib
import os
import pathlib
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping

REPO = pathlib.Path(__file__).resolve().parent.parent
FACILITIES_FILE = REPO / "config" / "demo-facilities.yaml"
FACILITIES = ("F001", "F002", "F003", "F004", "F005", "F006")  # of FACILITIES_FILE
# Stopping order: the connectors first (no new files), then the parser, then the sink.
STOP_ORDER = ("serve", "api-connector", "ftp-connector", "parser", "sink")
FTP_HOST = "127.0.0.1"
FTP_PORT = 2199  # as in FACILITIES_FILE
FTP_PASSIVE_PORTS = "30150-30199"
FTP_USER = "demo"
CLK_TCK = os.sysconf("SC_CLK_TCK")

Log = Callable[[str], None]


# ---------------------------------------------------------------- metrics


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a Prometheus text exposition: (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)", line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def metric_sum(samples, name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels`."""
    return sum(
        v for n, l, v in samples if n == name and all(l.get(k) == w for k, w in labels.items())
    )


def histogram_quantiles(samples, name: str, qs=(0.5, 0.95, 0.99)) -> dict[str, float | None]:
    """Quantiles of a histogram summed over its labels, interpolated within
    buckets like PromQL's histogram_quantile."""
    buckets: dict[float, float] = {}
    for n, labels, value in samples:
        if n == f"{name}_bucket":
            le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value
    bounds = sorted(buckets)
    out: dict[str, float | None] = {}
    total = buckets.get(float("inf"), 0.0)
    for q in qs:
        key = f"p{round(q * 100)}"
        if total == 0:
            out[key] = None
            continue
        rank = q * total
        lower, below = 0.0, 0.0
        for upper in bounds:
            count = buckets[upper]
            if count >= rank:
                if upper == float("inf"):
                    out[key] = lower  # beyond the last bucket: its bound
                else:
                    inside = count - below
                    out[key] = lower + (upper - lower) * ((rank - below) / inside if inside else 1)
                break
            lower, below = upper, count
    out["count"] = total
    out["mean"] = metric_sum(samples, f"{name}_sum") / total if total else None
    return out


# ---------------------------------------------------------------- environment


def demo_secrets(tag: str, zip_suffix: str, old_zip_suffix: str) -> dict[str, str]:
    """The secrets FACILITIES_FILE names, as environment variables with
    made-up values: `<tag>-pii-key`, `<tag>-ftp-password`, per facility
    `<tag>-f001-zip<zip_suffix>` and `<tag>-f001-api-key`, and F001's previous
    zip password `<tag>-f001-zip<old_zip_suffix>`."""
    secrets = {"DEMO_PII_KEY": f"{tag}-pii-key", "DEMO_FTP_PASSWORD": f"{tag}-ftp-password"}
    for facility in FACILITIES:
        lower = facility.lower()
        secrets[f"DEMO_{facility}_ZIP_PASSWORD"] = f"{tag}-{lower}-zip{zip_suffix}"
        secrets[api_key_var(facility)] = f"{tag}-{lower}-api-key"
    secrets["DEMO_F001_ZIP_PASSWORD_OLD"] = f"{tag}-f001-zip{old_zip_suffix}"
    return secrets


def api_key_var(facility: str) -> str:
    """The variable holding a facility's push API key."""
    return f"DEMO_{facility}_API_KEY"


def run_env(tag: str, run: str, config: pathlib.Path, lake: pathlib.Path,
            secrets: Mapping[str, str]) -> dict[str, str]:
    """The environment of one run's `medlake` processes: this process's, the
    secrets, the configuration file and lake, and topics (`medlake.<tag>.<run>`),
    parser transactional id and sink consumer group of this run alone, so a
    run never reads what an earlier one left."""
    env = dict(os.environ)
    env.update(secrets)
    env.update(
        MEDLAKE_CONFIG=str(config),
        MEDLAKE_LAKE_URI=str(lake),
        MEDLAKE_TOPICS__PREFIX=f"medlake.{tag}.{run}",
        MEDLAKE_PARSER__TRANSACTIONAL_ID=f"medlake-{tag}-parser-{run}",
        MEDLAKE_SINK__CONSUMER_GROUP=f"medlake-{tag}-sink-{run}",
    )
    return env


def run_medlake(binary: pathlib.Path, env: Mapping[str, str], *args: str, capture: bool = False) -> str:
    """Runs `medlake ARGS` to completion (CalledProcessError when it fails);
    its stdout when `capture`, else it goes to ours."""
    result = subprocess.run(
        [str(binary), *args], env=env, check=True, text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return result.stdout if capture else ""


# ---------------------------------------------------------------- processes


class Service:
    """One `medlake <service>` child process with its admin endpoint at
    `admin` (host:port: /readyz, /metrics)."""

    def __init__(self, name: str, binary: pathlib.Path, env: Mapping[str, str], log_dir: pathlib.Path, admin: str):
        self.name = name
        self.admin = admin
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [str(binary), name], env=dict(env, MEDLAKE_ADMIN__LISTEN=admin),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                process_group=0,  # Ctrl-C reaches the caller, which stops services in order
            )
        self.cpu_at_ready = 0.0

    def wait_ready(self, timeout: float) -> None:
        """Waits until /readyz answers 200; fails when the process exits or
        after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://{self.admin}/readyz", timeout=2) as reply:
                    if reply.status == 200:
                        self.cpu_at_ready = self.cpu_seconds()
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} is not ready after {timeout:g} s (http://{self.admin}/readyz); "
                           f"see {self.log_path}")

    def metrics(self):
        """The samples of its /metrics now."""
        with urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=10) as reply:
            return parse_metrics(reply.read().decode())

    def cpu_seconds(self) -> float:
        """User plus system CPU seconds so far (/proc/<pid>/stat)."""
        stat = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def peak_rss_mib(self) -> float:
        """Peak resident memory so far (VmHWM of /proc/<pid>/status)."""
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def usage(self, records: int) -> dict:
        """CPU since ready (per million records) and peak RSS, now."""
        cpu = self.cpu_seconds() - self.cpu_at_ready
        return {
            "cpu_s": round(cpu, 2),
            "cpu_s_per_m_records": round(cpu / (records / 1e6), 2) if records else None,
            "peak_rss_mib": round(self.peak_rss_mib(), 1),
        }


def wait_for(what: str, check, timeout: float, services: Mapping[str, Service], poll: float = 0.2):
    """Polls `check` until it returns a truthy value; fails after `timeout` or
    when a service died."""
    deadline = time.monotonic() + timeout
    while True:
        for service in services.values():
            if service.proc.poll() is not None:
                raise RuntimeError(f"{service.name} exited ({service.proc.returncode}) while waiting for {what}; "
                                   f"see {service.log_path}")
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def stop_process(proc: subprocess.Popen, name: str, timeout: float, log: Log) -> None:
    """SIGTERM, then SIGKILL when it has not exited after `timeout` seconds."""
    if proc.poll() is not None:
        return
    log(f"stopping {name} (pid {proc.pid})")
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop within {timeout:g}s: SIGKILL")
        proc.kill()
        proc.wait()


class Pipeline:
    """The child processes of one run in `work_dir`: the landing FTP server
    (root work_dir/ftp) and `medlake` services, logging to work_dir/logs
    (which must exist). `stop`, or leaving a `with` block, ends every one of
    them: connectors, parser, sink, then the FTP server."""

    def __init__(self, binary: pathlib.Path, env: Mapping[str, str], work_dir: pathlib.Path, log: Log,
                 stop_timeout: float = 60):
        self.binary = binary
        self.env = env
        self.work_dir = work_dir
        self.log_dir = work_dir / "logs"
        self.log = log
        self.stop_timeout = stop_timeout
        self.services: dict[str, Service] = {}
        self.ftp_server: subprocess.Popen | None = None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def start_ftp(self, python: str, password: str, timeout: float = 20,
                  facilities: Iterable[str] = FACILITIES) -> pathlib.Path:
        """Starts scripts/ftp_server.py on FTP_PORT (user FTP_USER, one
        `<facility>/incoming` folder each) and waits for its ready line;
        returns its root folder."""
        root = self.work_dir / "ftp"
        for facility in facilities:
            (root / facility / "incoming").mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / "ftp-server.log"
        with open(log_path, "ab") as out:
            self.ftp_server = subprocess.Popen(
                [python, str(REPO / "scripts" / "ftp_server.py"), "--host", FTP_HOST, "--port", str(FTP_PORT),
                 "--root", str(root), "--user", FTP_USER, "--passive-ports", FTP_PASSIVE_PORTS, "--quiet"],
                env=dict(os.environ, FTP_PASSWORD=password), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, process_group=0,
            )
        deadline = time.monotonic() + timeout
        while "FTP server ready" not in log_path.read_text():
            if self.ftp_server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the FTP server did not start: {log_path.read_text()}")
            time.sleep(0.1)
        return root

    def start_services(self, admins: Mapping[str, str], ready_timeout: float = 120) -> dict[str, Service]:
        """Starts `medlake <name>` for each name of `admins` (its admin
        address) and waits until all are ready; returns them (also in
        `services`, so `stop` ends them even when one fails to start)."""
        started = {}
        for name, admin in admins.items():
            service = Service(name, self.binary, self.env, self.log_dir, admin)
            self.services[name] = started[name] = service
            self.log(f"{name}: pid {service.proc.pid}, admin http://{admin} (/metrics /healthz /readyz), "
                     f"log {service.log_path}")
        for service in started.values():
            service.wait_ready(ready_timeout)
        return started

    def stop(self) -> None:
        """Stops every process started, in STOP_ORDER, then the FTP server."""
        for name in sorted(self.services, key=STOP_ORDER.index):
            stop_process(self.services[name].proc, name, self.stop_timeout, self.log)
        if self.ftp_server is not None:
            stop_process(self.ftp_server, "the FTP server", self.stop_timeout, self.log)


# ---------------------------------------------------------------- delivery


def split_by_channel(files: list[dict]) -> tuple[list[dict], list[dict]]:
    """A manifest's files as (by FTP: even indexes, by HTTP: odd indexes)."""
    return files[0::2], files[1::2]


class Delivery:
    """Sends the files of a data set written by `medlake gen` into `data_dir`
    (its manifest's `files`) to the pipeline, with the facilities' credentials
    from `secrets`: by HTTP PUT to the push API at `api_addr` (host:port), by
    FTP to the landing server."""

    def __init__(self, data_dir: pathlib.Path, secrets: Mapping[str, str], api_addr: str):
        self.data_dir = data_dir
        self.secrets = secrets
        self.api_addr = api_addr

    def deliver(self, files: list[dict], workers: int, ftp_root: pathlib.Path | None = None) -> tuple[int, int]:
        """Even indexes by FTP, then odd indexes by HTTP (`workers` at a
        time); returns (files by FTP, files by HTTP). The FTP share is
        uploaded through the server, or with `ftp_root` (the server's root)
        written straight into the landing folders, which is faster."""
        by_ftp, by_http = split_by_channel(files)
        if ftp_root is None:
            self.upload_ftp(by_ftp)
        else:
            self.stage_ftp(ftp_root, by_ftp)
        self.push(by_http, workers)
        return len(by_ftp), len(by_http)

    def push(self, files: list[dict], workers: int) -> None:
        """PUTs every file to the push API, `workers` at a time."""
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(self.put, files):
                pass

    def put(self, file: dict) -> float:
        """PUTs one file to /v1/files/{name} with its facility's API key,
        retrying for up to 120 s until it is accepted (202); fails at once on
        a 4xx answer. Returns when it was accepted (time.monotonic)."""
        body = (self.data_dir / file["path"]).read_bytes()
        key = self.secrets[api_key_var(file["facility_id"])]
        url = f"http://{self.api_addr}/v1/files/{file['name']}"
        deadline = time.monotonic() + 120
        while True:
            request = urllib.request.Request(url, data=body, method="PUT", headers={"x-api-key": key})
            try:
                with urllib.request.urlopen(request, timeout=60) as reply:
                    if reply.status == 202:
                        return time.monotonic()
                    last = f"{reply.status}"
            except urllib.error.HTTPError as error:
                if 400 <= error.code < 500:
                    raise RuntimeError(f"PUT {file['name']}: {error.code} {error.read()[:200]!r}")
                last = str(error.code)
            except (urllib.error.URLError, OSError) as error:
                last = str(error)
            if time.monotonic() > deadline:
                raise RuntimeError(f"PUT {file['name']} not accepted: {last}")
            time.sleep(0.2)

    def upload_ftp(self, files: list[dict]) -> None:
        """Uploads files to their facility's folder on the landing server
        under a temporary `.part` name, then renames them, as careful senders
        do. Leaving the `with` block sends QUIT."""
        with ftplib.FTP() as ftp:
            try:
                ftp.connect(FTP_HOST, FTP_PORT, timeout=30)
                ftp.login(FTP_USER, self.secrets["DEMO_FTP_PASSWORD"])
            except ftplib.all_errors as error:
                raise RuntimeError(f"FTP login to {FTP_HOST}:{FTP_PORT}: {error}") from error
            for file in files:
                target = f"/{file['facility_id']}/incoming/{file['name']}"
                try:
                    with open(self.data_dir / file["path"], "rb") as body:
                        ftp.storbinary(f"STOR {target}.part", body)
                    ftp.rename(f"{target}.part", target)
                except ftplib.all_errors as error:
                    raise RuntimeError(f"FTP upload of {target}: {error}") from error

    def stage_ftp(self, root: pathlib.Path, files: list[dict]) -> None:
        """Drops files into their facility's landing folder under the FTP
        server's `root`, as a finished upload looks (written under a
        temporary name, then renamed)."""
        for file in files:
            target = root / file["facility_id"] / "incoming" / file["name"]
            part = target.with_name(target.name + ".part")
            shutil.copyfile(self.data_dir / file["path"], part)
            os.rename(part, target)
