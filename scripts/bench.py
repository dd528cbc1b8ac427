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
  parser_files
              the parser alone on a backlog of seed-shaped files (archives
              below 8 kB, about 200 records each): one file per Kafka
              transaction, then the configured batches; files/s of each and
              their ratio.
  merge       the sink's MERGE path: upserts/s into a table of 1,000,000 rows
              and the peak RSS (services/sink/examples/merge_bench.rs).
  seed_day    a day of the company's traffic at its shape: 8,000 facilities,
              77,000 archives of about 200 records, half by the landing FTP
              server and half by HTTP, all services at once; then the
              tables' layout before and after `medlake maintain`, Spark
              group-by times and the landing walker's reaction time
              (scripts/seed_day.py).
  serve       the customers' reports (`medlake serve`) over the seed_day
              lake: 1,100 customers over its 8,000 facilities and an
              analyst; 20 clients, each another customer, ask every report
              in turn with its own facilities for --serve-seconds with no
              answer cache (serve.cache_bytes 0), then the same requests
              with the cache, warmed; latency p50/p95/max per report,
              requests/s, 429 and 503 answers, peak RSS, against the
              targets (scripts/serve_bench.py). Without seed_day in the same
              run it reads the lake an earlier seed_day phase left in
              <work>/seed_day, and fails when there is none.

Every phase starts from fresh topics and a fresh lake, and ends by checking
the lake against the generator's manifest (rows per table; parser_files: the
parser's processed files and records), so a fast but wrong run fails instead
of being reported. The serve phase only reads (and appends its `_audit`
rows): it fails when a report answers without a row.

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
import shutil
import signal
import subprocess
import sys
import time

# The pipeline's processes, file delivery and metric arithmetic are shared
# with the demo (scripts/demo.py) in scripts/medlake_local.py.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from medlake_local import (  # noqa: E402
    FACILITIES_FILE, REPO, Delivery, Pipeline, Service, demo_secrets, histogram_quantiles, metric_sum,
    run_env, run_medlake, split_by_channel, wait_for,
)
import seed_day  # noqa: E402
import serve_bench  # noqa: E402

API_ADDR = "127.0.0.1:18481"  # api_connector.listen of config/bench.yaml
SERVE_ADDR = "127.0.0.1:18482"  # serve.listen of config/bench.yaml
SERVE_ADMIN = "127.0.0.1:19415"
# Admin endpoints, in the order the services start and the results list them.
ADMINS = {
    "sink": "127.0.0.1:19411",
    "parser": "127.0.0.1:19412",
    "ftp-connector": "127.0.0.1:19413",
    "api-connector": "127.0.0.1:19414",
}
MIB = 1024 * 1024


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the run


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = pathlib.Path(args.work).resolve()
        self.binary = pathlib.Path(args.binary).resolve()
        self.secrets = demo_secrets("bench", zip_suffix="", old_zip_suffix="-old")
        self.phase_dir = self.work

    @staticmethod
    def log(message: str) -> None:
        log(message)

    # -- environment

    def env(self, phase: str) -> dict:
        """The environment of a phase's `medlake` processes: its own topics
        and groups, its lake, the repository's schemas and facilities."""
        run = f"{phase}-{int(time.time())}"
        env = run_env("bench", run, pathlib.Path(self.args.config).resolve(), self.phase_dir / "lake",
                      self.secrets)
        env.update(
            MEDLAKE_SCHEMAS_DIR=str(REPO / "schemas"),
            MEDLAKE_FACILITIES_FILE=str(FACILITIES_FILE),
            MEDLAKE_PARSER__GROUP_ID=f"medlake-bench-parser-{run}",
            NO_COLOR="1",
        )
        return env

    # -- data

    def generate(self, name: str, files: int, seed: int, max_zip_bytes: int | None = None) -> dict:
        out = self.work / name
        env = self.env("gen")
        args = ["gen", "--out", str(out), "--registry", str(FACILITIES_FILE),
                "--files", str(files), "--seed", str(seed)]
        if max_zip_bytes:
            args += ["--max-zip-bytes", str(max_zip_bytes)]
        started = time.monotonic()
        run_medlake(self.binary, env, *args, capture=True)
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["_dir"] = str(out)
        log(f"generated {len(manifest['files'])} files in {time.monotonic() - started:.1f}s: {describe(manifest)}")
        return manifest

    def delivery(self, manifest: dict) -> Delivery:
        """Sends the manifest's files to this run's connectors."""
        return Delivery(pathlib.Path(manifest["_dir"]), self.secrets, API_ADDR)

    # -- phases

    def fresh_phase(self, name: str) -> dict:
        self.phase_dir = self.work / name
        shutil.rmtree(self.phase_dir, ignore_errors=True)
        (self.phase_dir / "logs").mkdir(parents=True)
        (self.phase_dir / "lake").mkdir()
        env = self.env(name)
        run_medlake(self.binary, env, "topics", "ensure", capture=True)
        return env

    def pipeline(self, env: dict) -> Pipeline:
        """The phase's child processes, all stopped when its `with` block ends."""
        return Pipeline(self.binary, env, self.phase_dir, log)

    def start_ftp(self, run: Pipeline) -> pathlib.Path:
        """Starts the phase's landing FTP server; returns its root."""
        return run.start_ftp(self.args.python, self.secrets["DEMO_FTP_PASSWORD"])

    @staticmethod
    def start(run: Pipeline, *names: str) -> dict[str, Service]:
        """Starts these services with their admin endpoints; waits until ready."""
        return run.start_services({name: ADMINS[name] for name in names})

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
        out = run_medlake(self.binary, env, "tables", "summary", "--manifest",
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
        ftp_files, http_files = split_by_channel(files)
        delivery = self.delivery(manifest)
        with self.pipeline(env) as run:
            stages = {}
            # FTP connector: its share already waits on the server.
            delivery.stage_ftp(self.start_ftp(run), ftp_files)
            ftp = self.start(run, "ftp-connector")["ftp-connector"]
            started = time.monotonic()
            wait_for("the FTP connector", lambda: metric_sum(ftp.metrics(), "medlake_connector_files_received_total") >= len(ftp_files),
                     self.args.timeout, run.services, poll=0.1)
            stages["ftp_connector"] = stage_figures(time.monotonic() - started, manifest_totals(manifest, ftp_files), ftp)

            api = self.start(run, "api-connector")["api-connector"]
            started = time.monotonic()
            delivery.push(http_files, self.args.push_workers)
            stages["api_connector"] = stage_figures(time.monotonic() - started, manifest_totals(manifest, http_files), api)
            log(f"connectors: ftp {stages['ftp_connector']['files_per_s']} files/s, http {stages['api_connector']['files_per_s']} files/s")

            parser = self.start(run, "parser")["parser"]
            started = time.monotonic()
            wait_for("the parser", lambda: metric_sum(parser.metrics(), "medlake_parser_files_total") >= len(files),
                     self.args.timeout, run.services)
            stages["parser"] = stage_figures(time.monotonic() - started, totals, parser)
            log(f"parser: {stages['parser']['records_per_s']} records/s")

            sink = self.start(run, "sink")["sink"]
            started = time.monotonic()
            wait_for("the sink", self.sink_done(parser, sink, len(files)), self.args.timeout, run.services)
            sink_totals = dict(totals)
            sink_totals["bytes"] = int(metric_sum(sink.metrics(), "medlake_sink_batch_bytes_sum"))
            stages["sink"] = stage_figures(time.monotonic() - started, sink_totals, sink)
            stages["sink"]["bytes_are"] = "record JSON consumed"
            log(f"sink: {stages['sink']['records_per_s']} records/s")
            self.reconcile(env, manifest)
            return stages

    def phase_end_to_end(self, manifest: dict) -> dict:
        """All services, every file delivered at once (saturation)."""
        env = self.fresh_phase("end_to_end")
        totals = manifest_totals(manifest)
        files = manifest["files"]
        with self.pipeline(env) as run:
            root = self.start_ftp(run)
            services = self.start(run, *ADMINS)
            profile = self.start_profiles(services)
            started = time.monotonic()
            self.delivery(manifest).deliver(files, self.args.push_workers, ftp_root=root)
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

    def phase_fixed_load(self, manifest: dict) -> dict:
        """All services, files pushed over HTTP at a fixed rate."""
        env = self.fresh_phase("fixed_load")
        files = manifest["files"]
        rate = self.args.fixed_files_per_hour / 3600
        totals = manifest_totals(manifest)
        delivery = self.delivery(manifest)
        with self.pipeline(env) as run:
            services = self.start(run, *ADMINS)
            started = time.monotonic()
            lag = 0.0
            with concurrent.futures.ThreadPoolExecutor(self.args.push_workers * 2) as pool:
                pending = []
                for i, file in enumerate(files):
                    due = started + i / rate
                    time.sleep(max(0.0, due - time.monotonic()))
                    lag = max(lag, time.monotonic() - due)
                    pending.append(pool.submit(delivery.put, file))
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

    def phase_parser_files(self, manifest: dict) -> dict:
        """The parser alone on a backlog of seed-shaped files (about 200
        records each), once with one file per transaction and once with the
        configuration's batches: what batching buys in files/s."""
        totals = manifest_totals(manifest)
        files = manifest["files"]
        out = {}
        for label, per_transaction in (("one_file_per_transaction", "1"), ("batched", None)):
            env = self.fresh_phase(f"parser_files_{label}")
            if per_transaction:
                env["MEDLAKE_PARSER__MAX_FILES_PER_TRANSACTION"] = per_transaction
            with self.pipeline(env) as run:
                self.start(run, "api-connector")
                self.delivery(manifest).push(files, self.args.push_workers)
                parser = self.start(run, "parser")["parser"]
                started = time.monotonic()
                wait_for("the parser", lambda: metric_sum(parser.metrics(), "medlake_parser_files_total") >= len(files),
                         self.args.timeout, run.services)
                figures = stage_figures(time.monotonic() - started, totals, parser)
                processed = metric_sum(parser.metrics(), "medlake_parser_files_total", status="processed")
                records = metric_sum(parser.metrics(), "medlake_parser_records_total")
                if processed != len(files) or records != totals["records"]:
                    raise RuntimeError(f"parser_files: {processed} of {len(files)} files processed, "
                                       f"{records} of {totals['records']} records")
                figures["transactions"] = int(metric_sum(parser.metrics(), "medlake_parser_transactions_total",
                                                         status="committed"))
                out[label] = figures
                log(f"parser, {label}: {figures['files_per_s']} files/s in {figures['transactions']} transactions")
        out["files_per_s_ratio"] = round(out["batched"]["files_per_s"] / out["one_file_per_transaction"]["files_per_s"], 2)
        return out

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


def clear_work(work: pathlib.Path, keep: set[str]) -> None:
    """Empties the work folder but for its entries named in `keep`."""
    if work.is_dir():
        for entry in work.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    work.mkdir(parents=True, exist_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True, help="the release medlake binary")
    parser.add_argument("--merge-bench", required=True, help="the release merge_bench example")
    parser.add_argument("--python", required=True, help="python with pyftpdlib (FTP server)")
    parser.add_argument("--config", default=str(REPO / "config" / "bench.yaml"),
                        help="medlake configuration of the services (the file's settings are what is measured)")
    parser.add_argument("--work", default=str(REPO / ".bench"),
                        help="scratch folder, replaced at the start; but when the serve phase runs without "
                             "seed_day, its seed_day/ folder (the lake serve reads) is kept")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--files", type=int, default=60,
                        help="files of the throughput phases (the generator's size mix: 60 files are about 1 M records)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--fixed-seconds", type=float, default=120, help="length of the fixed-load phase")
    parser.add_argument("--fixed-files-per-hour", type=float, default=35000)
    parser.add_argument("--push-workers", type=int, default=4)
    parser.add_argument("--merge-batches", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--parser-files", type=int, default=3000,
                        help="seed-shaped files (about 200 records each) of the parser_files phase")
    parser.add_argument("--seed-day-files", type=int, default=77000, help="archives of the seed_day phase")
    parser.add_argument("--seed-day-facilities", type=int, default=8000, help="facilities of the seed_day phase")
    parser.add_argument("--seed-day-drops", type=int, default=40,
                        help="files dropped one by one into landing folders after the seed day")
    parser.add_argument("--cache", default=str(pathlib.Path(os.environ.get("MEDLAKE_CACHE", pathlib.Path.home() / ".cache" / "medlake")) / "bench"),
                        help="where generated seed-day archives are kept between runs")
    parser.add_argument("--serve-seconds", type=float, default=120,
                        help="length of the serve phase's uncached pass (the cached pass repeats its requests)")
    parser.add_argument("--serve-clients", type=int, default=serve_bench.CLIENTS,
                        help="concurrent clients of the serve phase, each another customer")
    parser.add_argument("--serve-customers", type=int, default=serve_bench.CUSTOMERS,
                        help="customers of the serve phase's registry, sharing the seed_day facilities")
    parser.add_argument("--phases", default="stages,end_to_end,fixed_load,parser_files,merge,seed_day,serve")
    parser.add_argument("--profile", action="store_true", help="perf record the parser and the sink end to end")
    args = parser.parse_args()

    bench = Bench(args)
    phases = args.phases.split(",")
    # serve without seed_day reads the lake an earlier seed_day phase left.
    keep = {"seed_day"} if "serve" in phases and "seed_day" not in phases else set()
    if keep:
        serve_bench.seed_lake(bench.work)
    clear_work(bench.work, keep)
    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    result: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "machine": machine(),
        "build": "debug" if "debug" in bench.binary.parts else "release",
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
    if "parser_files" in phases:
        # The same shape as the fixed load: archives below 8 kB.
        small = bench.generate("parser_files_data", args.parser_files, args.seed + 2, max_zip_bytes=8000)
        result["parser_files"] = bench.phase_parser_files(small)
    if "merge" in phases:
        result["merge"] = bench.phase_merge()
    if "seed_day" in phases:
        manifest, registry, secrets = seed_day.generate(bench, pathlib.Path(args.cache), args.seed_day_files,
                                                        args.seed_day_facilities, args.seed + 3)
        result["seed_day_data"] = manifest_totals(manifest)
        result["seed_day_data"]["shape"] = describe(manifest)
        result["seed_day"] = seed_day.run_phase(bench, manifest, registry, secrets)
    if "serve" in phases:
        result["serve"] = serve_bench.run_phase(bench, SERVE_ADDR, SERVE_ADMIN,
                                                seed_day.facility_ids(args.seed_day_facilities))
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
