#!/usr/bin/env python3
"""The medlake benchmark (`make bench`, through scripts/bench.sh).

Runs the release `medlake` binary's four services as child processes against
a real broker, the landing FTP server and a local lake, on files written by
`medlake gen`, and measures:

  stages      each service alone on a backlog: the FTP and HTTP connectors
              ingest half of the files each, then the parser works through the
              raw topic, then the sink through the records topics. Per stage:
              records/s, MB/s, files/s, CPU seconds per million records, peak
              RSS.
  end_to_end  all four services at once, every file delivered as fast as the
              connectors take them (saturation): records/s from the first
              delivery to the last commit, file-to-table latency p50/p95/p99,
              CPU and peak RSS of each service.
  fixed_load  all four services, files pushed over HTTP at a fixed rate (by
              default 10x the requirements' peak hour: 35,000 zips/h);
              file-to-table latency p50/p95/p99 and what each service used.
  merge       the sink's MERGE path: upserts/s into a table of 1,000,000 rows
              and the peak RSS (services/sink/examples/merge_bench.rs).

Every phase starts from fresh topics and a fresh lake, and ends by checking
the lake against the generator's manifest (rows per table), so a fast but
wrong run fails instead of being reported.

Latencies come from the sink's `medlake_sink_file_to_table_seconds`
histogram (from a file's `medlake.received_at` at the connector to the Delta
commit of its rows), interpolated within buckets as Prometheus'
histogram_quantile does. CPU seconds and peak RSS are read from
/proc/<pid>/stat and /proc/<pid>/status (VmHWM) of each service.

Writes bench/results/<date>-<commit>.json and prints it. Standard library
only; the FTP server runs on the project's Python environment (pyftpdlib).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

REPO = pathlib.Path(__file__).resolve().parent.parent
SERVICES = ("sink", "parser", "ftp-connector", "api-connector")
FACILITIES = ("F001", "F002", "F003", "F004", "F005", "F006")
FTP_PORT = 2199  # as in config/demo-facilities.yaml
API_PORT = 18481  # api_connector.listen of config/bench.yaml
ADMIN_PORTS = {"sink": 19411, "parser": 19412, "ftp-connector": 19413, "api-connector": 19414}
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


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


# ---------------------------------------------------------------- services


class Service:
    """One `medlake <service>` child process with its admin endpoint."""

    def __init__(self, name: str, binary: pathlib.Path, env: dict, log_dir: pathlib.Path):
        self.name = name
        self.admin = f"127.0.0.1:{ADMIN_PORTS[name]}"
        env = dict(env, MEDLAKE_ADMIN__LISTEN=self.admin)
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [str(binary), name], env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.cpu_at_ready = 0.0

    def wait_ready(self, timeout: float = 120) -> None:
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
        raise RuntimeError(f"{self.name} not ready after {timeout}s; see {self.log_path}")

    def metrics(self):
        with urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=10) as reply:
            return parse_metrics(reply.read().decode())

    def cpu_seconds(self) -> float:
        stat = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def peak_rss_mib(self) -> float:
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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for(what: str, check, timeout: float, services: dict[str, Service], poll: float = 0.2):
    """Polls `check` until it returns a truthy value; fails after `timeout` or
    when a service died."""
    deadline = time.monotonic() + timeout
    while True:
        for service in services.values():
            if service.proc.poll() is not None:
                raise RuntimeError(f"{service.name} exited ({service.proc.returncode}) while waiting for {what}; see {service.log_path}")
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


# ---------------------------------------------------------------- the run


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = pathlib.Path(args.work).resolve()
        self.binary = pathlib.Path(args.binary).resolve()
        self.secrets = {"DEMO_PII_KEY": "bench-pii-key", "DEMO_FTP_PASSWORD": "bench-ftp-password"}
        for f in FACILITIES:
            self.secrets[f"DEMO_{f}_ZIP_PASSWORD"] = f"bench-{f.lower()}-zip"
            self.secrets[f"DEMO_{f}_API_KEY"] = f"bench-{f.lower()}-api-key"
        self.secrets["DEMO_F001_ZIP_PASSWORD_OLD"] = "bench-f001-zip-old"
        self.ftp_server: subprocess.Popen | None = None
        self.phase_dir = self.work

    # -- environment

    def env(self, phase: str) -> dict:
        env = dict(os.environ)
        env.update(self.secrets)
        run = f"{phase}-{int(time.time())}"
        env.update(
            MEDLAKE_CONFIG=str(pathlib.Path(self.args.config).resolve()),
            MEDLAKE_LAKE_URI=str(self.phase_dir / "lake"),
            MEDLAKE_SCHEMAS_DIR=str(REPO / "schemas"),
            MEDLAKE_FACILITIES_FILE=str(REPO / "config" / "demo-facilities.yaml"),
            MEDLAKE_TOPICS__PREFIX=f"medlake.bench.{run}",
            MEDLAKE_PARSER__GROUP_ID=f"medlake-bench-parser-{run}",
            MEDLAKE_PARSER__TRANSACTIONAL_ID=f"medlake-bench-parser-{run}",
            MEDLAKE_SINK__CONSUMER_GROUP=f"medlake-bench-sink-{run}",
            NO_COLOR="1",
        )
        return env

    def medlake(self, env: dict, *args: str, capture=False) -> str:
        result = subprocess.run(
            [str(self.binary), *args], env=env, check=True, text=True,
            stdout=subprocess.PIPE if capture else None,
        )
        return result.stdout if capture else ""

    # -- data

    def generate(self, name: str, files: int, seed: int, max_zip_bytes: int | None = None) -> dict:
        out = self.work / name
        env = self.env("gen")
        args = ["gen", "--out", str(out), "--registry", str(REPO / "config" / "demo-facilities.yaml"),
                "--files", str(files), "--seed", str(seed)]
        if max_zip_bytes:
            args += ["--max-zip-bytes", str(max_zip_bytes)]
        started = time.monotonic()
        self.medlake(env, *args, capture=True)
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["_dir"] = str(out)
        log(f"generated {len(manifest['files'])} files in {time.monotonic() - started:.1f}s: {describe(manifest)}")
        return manifest

    # -- FTP server

    def start_ftp(self) -> pathlib.Path:
        root = self.phase_dir / "ftp"
        for f in FACILITIES:
            (root / f / "incoming").mkdir(parents=True, exist_ok=True)
        log_path = self.phase_dir / "logs" / "ftp-server.log"
        env = dict(os.environ, FTP_PASSWORD=self.secrets["DEMO_FTP_PASSWORD"])
        with open(log_path, "ab") as out:
            self.ftp_server = subprocess.Popen(
                [self.args.python, str(REPO / "scripts" / "ftp_server.py"), "--port", str(FTP_PORT),
                 "--root", str(root), "--user", "demo", "--passive-ports", "30150-30199", "--quiet"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while "FTP server ready" not in log_path.read_text():
            if self.ftp_server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the FTP server did not start: {log_path.read_text()}")
            time.sleep(0.1)
        return root

    def stop_ftp(self) -> None:
        if self.ftp_server and self.ftp_server.poll() is None:
            self.ftp_server.terminate()
            self.ftp_server.wait(10)
        self.ftp_server = None

    # -- phases

    def fresh_phase(self, name: str) -> dict:
        self.phase_dir = self.work / name
        shutil.rmtree(self.phase_dir, ignore_errors=True)
        (self.phase_dir / "logs").mkdir(parents=True)
        (self.phase_dir / "lake").mkdir()
        env = self.env(name)
        self.medlake(env, "topics", "ensure", capture=True)
        return env

    def stop_all(self, services: dict[str, Service]) -> None:
        """Stops the phase's services and its FTP server (if any)."""
        for service in services.values():
            service.stop()
        self.stop_ftp()

    def start(self, env: dict, names) -> dict[str, Service]:
        services = {}
        for name in names:
            services[name] = Service(name, self.binary, env, self.phase_dir / "logs")
        for service in services.values():
            service.wait_ready()
        return services

    def push(self, manifest: dict, files: list[dict]) -> None:
        """PUT every file to the push API, `--push-workers` at a time,
        retrying until each is accepted (202)."""
        with concurrent.futures.ThreadPoolExecutor(self.args.push_workers) as pool:
            for _ in pool.map(lambda f: self.put(manifest, f), files):
                pass

    def put(self, manifest: dict, file: dict) -> float:
        body = (pathlib.Path(manifest["_dir"]) / file["path"]).read_bytes()
        key = self.secrets[f"DEMO_{file['facility_id']}_API_KEY"]
        url = f"http://127.0.0.1:{API_PORT}/v1/files/{file['name']}"
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

    def stage_ftp(self, root: pathlib.Path, manifest: dict, files: list[dict]) -> None:
        """Drops files into their facility's landing folder, as a finished
        upload looks (written under a temporary name, then renamed)."""
        for file in files:
            target = root / file["facility_id"] / "incoming" / file["name"]
            part = target.with_name(target.name + ".part")
            shutil.copyfile(pathlib.Path(manifest["_dir"]) / file["path"], part)
            os.rename(part, target)

    def expected_sink_messages(self, parser: Service) -> tuple[int, int]:
        """(files done, messages the parser produced: records, dead letters
        and one ledger entry per file)."""
        m = parser.metrics()
        files = int(metric_sum(m, "medlake_parser_files_total"))
        produced = files + int(metric_sum(m, "medlake_parser_records_total")) + int(
            metric_sum(m, "medlake_parser_rejects_total"))
        return files, produced

    def reconcile(self, env: dict, manifest: dict) -> dict:
        """Rows per table from the lake; fails unless the lake reconciles
        with the manifest (`medlake tables summary --manifest`)."""
        out = self.medlake(env, "tables", "summary", "--manifest",
                           str(pathlib.Path(manifest["_dir"]) / "manifest.json"), "--wait-s", "60",
                           "--json", capture=True)
        return json.loads(out)["summary"]["tables"]

    def sink_done(self, parser: Service, sink: Service, files: int):
        def check():
            done, produced = self.expected_sink_messages(parser)
            if done < files:
                return None
            consumed = metric_sum(sink.metrics(), "medlake_sink_messages_total")
            return time.monotonic() if consumed >= produced else None
        return check

    def phase_stages(self, manifest: dict) -> dict:
        """Each stage alone on the whole backlog."""
        env = self.fresh_phase("stages")
        totals = manifest_totals(manifest)
        files = manifest["files"]
        ftp_files, http_files = files[0::2], files[1::2]
        root = self.start_ftp()
        services: dict[str, Service] = {}
        try:
            stages = {}
            # FTP connector: its share already waits on the server.
            self.stage_ftp(root, manifest, ftp_files)
            services.update(self.start(env, ["ftp-connector"]))
            ftp = services["ftp-connector"]
            started = time.monotonic()
            wait_for("the FTP connector", lambda: metric_sum(ftp.metrics(), "medlake_connector_files_received_total") >= len(ftp_files),
                     self.args.timeout, services, poll=0.1)
            stages["ftp_connector"] = stage_figures(time.monotonic() - started, manifest_totals(manifest, ftp_files), ftp)

            services.update(self.start(env, ["api-connector"]))
            api = services["api-connector"]
            started = time.monotonic()
            self.push(manifest, http_files)
            stages["api_connector"] = stage_figures(time.monotonic() - started, manifest_totals(manifest, http_files), api)
            log(f"connectors: ftp {stages['ftp_connector']['files_per_s']} files/s, http {stages['api_connector']['files_per_s']} files/s")

            services.update(self.start(env, ["parser"]))
            parser = services["parser"]
            started = time.monotonic()
            wait_for("the parser", lambda: metric_sum(parser.metrics(), "medlake_parser_files_total") >= len(files),
                     self.args.timeout, services)
            stages["parser"] = stage_figures(time.monotonic() - started, totals, parser)
            log(f"parser: {stages['parser']['records_per_s']} records/s")

            services.update(self.start(env, ["sink"]))
            sink = services["sink"]
            started = time.monotonic()
            wait_for("the sink", self.sink_done(parser, sink, len(files)), self.args.timeout, services)
            sink_totals = dict(totals)
            sink_totals["bytes"] = int(metric_sum(sink.metrics(), "medlake_sink_batch_bytes_sum"))
            stages["sink"] = stage_figures(time.monotonic() - started, sink_totals, sink)
            stages["sink"]["bytes_are"] = "record JSON consumed"
            log(f"sink: {stages['sink']['records_per_s']} records/s")
            self.reconcile(env, manifest)
            return stages
        finally:
            self.stop_all(services)

    def phase_end_to_end(self, manifest: dict) -> dict:
        """All services, every file delivered at once (saturation)."""
        env = self.fresh_phase("end_to_end")
        totals = manifest_totals(manifest)
        files = manifest["files"]
        root = self.start_ftp()
        services: dict[str, Service] = {}
        try:
            services = self.start(env, SERVICES)
            profile = self.start_profiles(services)
            started = time.monotonic()
            self.stage_ftp(root, manifest, files[0::2])
            self.push(manifest, files[1::2])
            delivered = time.monotonic() - started
            done = wait_for("the pipeline", self.sink_done(services["parser"], services["sink"], len(files)),
                            self.args.timeout, services)
            elapsed = done - started
            self.stop_profiles(profile)
            figures = stage_figures(elapsed, totals, None)
            figures["delivery_s"] = round(delivered, 2)
            figures.update(latencies(services["sink"]))
            figures["services"] = {n: s.usage(totals["records"]) for n, s in services.items()}
            figures["rows"] = self.reconcile(env, manifest)
            log(f"end to end: {figures['records_per_s']} records/s, latency {figures['latency_s']}")
            return figures
        finally:
            self.stop_all(services)

    def phase_fixed_load(self, manifest: dict) -> dict:
        """All services, files pushed over HTTP at a fixed rate."""
        env = self.fresh_phase("fixed_load")
        files = manifest["files"]
        rate = self.args.fixed_files_per_hour / 3600
        totals = manifest_totals(manifest)
        services: dict[str, Service] = {}
        try:
            services = self.start(env, SERVICES)
            started = time.monotonic()
            lag = 0.0
            with concurrent.futures.ThreadPoolExecutor(self.args.push_workers * 2) as pool:
                pending = []
                for i, file in enumerate(files):
                    due = started + i / rate
                    time.sleep(max(0.0, due - time.monotonic()))
                    lag = max(lag, time.monotonic() - due)
                    pending.append(pool.submit(self.put, manifest, file))
                for future in pending:
                    future.result()
            offered = time.monotonic() - started
            wait_for("the pipeline", self.sink_done(services["parser"], services["sink"], len(files)),
                     self.args.timeout, services)
            figures = {
                "offered_files_per_s": round(rate, 2),
                "offered_records_per_s": round(totals["records"] / offered, 1),
                "offered_mb_per_s": round(totals["bytes"] / MIB / offered, 3),
                "seconds": round(offered, 1),
                "files": totals["files"],
                "records": totals["records"],
                "max_send_delay_s": round(lag, 3),
                **latencies(services["sink"]),
                "services": {n: s.usage(totals["records"]) for n, s in services.items()},
            }
            figures["rows"] = self.reconcile(env, manifest)
            log(f"fixed load: {figures['offered_files_per_s']} files/s, latency {figures['latency_s']}")
            return figures
        finally:
            self.stop_all(services)

    def phase_merge(self) -> dict:
        lake = self.work / "merge"
        shutil.rmtree(lake, ignore_errors=True)
        lake.mkdir(parents=True)
        def run(*args: str) -> str:
            return subprocess.run([self.args.merge_bench, *args], check=True, text=True,
                                  stdout=subprocess.PIPE).stdout

        log(run("build", str(lake)).strip())
        out = run("merge", str(lake), str(self.args.merge_batches))
        figures = json.loads(out.strip().splitlines()[-1])
        log(f"merge: {figures}")
        return figures

    # -- profiles

    def start_profiles(self, services: dict[str, Service]) -> list:
        if not self.args.profile:
            return []
        out = []
        for name in ("parser", "sink"):
            data = self.work / f"perf-{name}.data"
            proc = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-o", str(data), "-p",
                                     str(services[name].proc.pid)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            out.append((name, proc, data))
        return out

    def stop_profiles(self, profiles: list) -> None:
        for name, proc, data in profiles:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
            report = subprocess.run(
                ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso,symbol", "--stdio",
                 "--percent-limit", "1.5", "-g", "none"],
                text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            path = self.work / f"perf-{name}.txt"
            path.write_text(report.stdout)
            log(f"profile of the {name}: {path}")


# ---------------------------------------------------------------- figures


def manifest_totals(manifest: dict, files: list[dict] | None = None) -> dict:
    files = manifest["files"] if files is None else files
    return {
        "files": len(files),
        "bytes": sum(f["bytes"] for f in files),
        "records": sum(sum(f["records"].values()) for f in files),
    }


def stage_figures(seconds: float, totals: dict, service: Service | None) -> dict:
    figures = {
        "seconds": round(seconds, 2),
        "files": totals["files"],
        "records": totals["records"],
        "mb": round(totals["bytes"] / MIB, 2),
        "files_per_s": round(totals["files"] / seconds, 2),
        "records_per_s": round(totals["records"] / seconds, 1),
        "mb_per_s": round(totals["bytes"] / MIB / seconds, 3),
    }
    if service is not None:
        figures.update(service.usage(totals["records"]))
    return figures


def latencies(sink: Service) -> dict:
    """File-to-table latency, and the Delta commits behind it."""
    m = sink.metrics()
    return {
        "latency_s": rounded(histogram_quantiles(m, "medlake_sink_file_to_table_seconds")),
        "sink_commit_s": rounded(histogram_quantiles(m, "medlake_sink_commit_duration_seconds")),
    }


def rounded(values: dict) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in values.items()}


def describe(manifest: dict) -> str:
    files = manifest["files"]
    sizes = sorted(f["bytes"] for f in files)
    records = sum(sum(f["records"].values()) for f in files)
    kinds: dict[str, int] = {}
    for f in files:
        kinds[f["container"]] = kinds.get(f["container"], 0) + 1
    return (f"{sum(sizes) / MIB:.1f} MiB, {records} records, sizes p50 {sizes[len(sizes) // 2] / 1024:.0f} KiB "
            f"p99 {sizes[int(len(sizes) * 0.99)] / 1024:.0f} KiB max {sizes[-1] / 1024:.0f} KiB, {kinds}")


def machine() -> dict:
    cpu = "unknown"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // 1024 // 1024
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "memory_gib": mem, "kernel": platform.release(),
            "os": platform.platform()}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True, help="the release medlake binary")
    parser.add_argument("--merge-bench", required=True, help="the release merge_bench example")
    parser.add_argument("--python", required=True, help="python with pyftpdlib (FTP server)")
    parser.add_argument("--config", default=str(REPO / "config" / "bench.yaml"),
                        help="medlake configuration of the services (the file's settings are what is measured)")
    parser.add_argument("--work", default=str(REPO / ".bench"), help="scratch folder (replaced)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--files", type=int, default=60,
                        help="files of the throughput phases (the generator's size mix: 60 files are about 1 M records)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--fixed-seconds", type=float, default=120, help="length of the fixed-load phase")
    parser.add_argument("--fixed-files-per-hour", type=float, default=35000)
    parser.add_argument("--push-workers", type=int, default=4)
    parser.add_argument("--merge-batches", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--phases", default="stages,end_to_end,fixed_load,merge")
    parser.add_argument("--profile", action="store_true", help="perf record the parser and the sink end to end")
    args = parser.parse_args()

    bench = Bench(args)
    shutil.rmtree(bench.work, ignore_errors=True)
    bench.work.mkdir(parents=True)
    phases = args.phases.split(",")
    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    result: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "machine": machine(),
        "build": "release",
        "config": os.path.relpath(args.config, REPO),
        "kafka_brokers": os.environ.get("KAFKA_BROKERS", ""),
    }
    started = time.monotonic()
    if {"stages", "end_to_end"} & set(phases):
        data = bench.generate("data", args.files, args.seed)
        result["data"] = manifest_totals(data)
        result["data"]["shape"] = describe(data)
        if "stages" in phases:
            result["stages"] = bench.phase_stages(data)
        if "end_to_end" in phases:
            result["end_to_end"] = bench.phase_end_to_end(data)
    if "fixed_load" in phases:
        n = max(1, int(args.fixed_seconds * args.fixed_files_per_hour / 3600))
        # Archives below 8 kB hold about 200 records each: the requirements'
        # ratio (7 M records in 35,000 zips an hour).
        fixed = bench.generate("fixed_data", n, args.seed + 1, max_zip_bytes=8000)
        result["fixed_load"] = bench.phase_fixed_load(fixed)
    if "merge" in phases:
        result["merge"] = bench.phase_merge()
    result["bench_seconds"] = round(time.monotonic() - started, 1)

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    day = datetime.date.today().isoformat()
    path = out / f"{day}-{commit}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    log(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
