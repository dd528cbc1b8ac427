"""The `seed_day` phase of the benchmark (scripts/bench.py): a day of the
company's traffic, at its shape, through all four services.

  - a registry of 8,000 facilities (every fifth sends unprotected archives,
    one is rotating its password), all pushing to one landing FTP server (a
    folder each) and to the push API;
  - 77,000 archives of about 200 records each (`medlake gen --max-zip-bytes
    8000`), generated once into the bench cache and reused;
  - half staged in the facilities' landing folders, half pushed over HTTP,
    with every service running; the day is done when the sink has written
    everything the parser produced, and the lake must reconcile with the
    manifest;
  - then, per table: files, average file size, partitions, the most files in
    one partition, log length and load time (`medlake tables layout`), before
    and after `medlake maintain`, and the seconds of a Spark
    `GROUP BY facility_id` count over each table;
  - and the landing walker's reaction time: files dropped one by one into
    random facility folders of the 8,000, timed until the connector moved
    them to `processed/`.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import random
import subprocess
import threading
import time

from medlake_local import (
    FTP_HOST, FTP_PORT, FTP_USER, REPO, Delivery, Service, api_key_var, metric_sum, run_medlake, wait_for,
)

# The landing walker of the seed registry: sessions and poll interval.
LANDING_SESSIONS = 4
LANDING_POLL_MS = 5000


def facility_ids(count: int) -> list[str]:
    return [f"S{n:04d}" for n in range(1, count + 1)]


def seed_secret(facility: str, what: str) -> str:
    """A made-up secret, the same on every run (cached archives stay readable)."""
    return hashlib.sha256(f"medlake-seed-{facility}-{what}".encode()).hexdigest()[:20]


def write_registry(path: pathlib.Path, count: int) -> dict[str, str]:
    """Writes the seed registry (`count` facilities behind one landing
    server) and returns the secrets it names, as environment variables."""
    secrets: dict[str, str] = {}
    lines = [
        "# The benchmark's seed registry (scripts/seed_day.py): secrets are variables it sets.",
        "landing:",
        f"  - sessions: {LANDING_SESSIONS}",
        "    server:",
        "      id: landing",
        f"      host: {FTP_HOST}",
        f"      port: {FTP_PORT}",
        f"      user: {FTP_USER}",
        "      password: { env: DEMO_FTP_PASSWORD }",
        '      directory: "/{facility}/incoming"',
        '      glob: "*.{zip,gz}"',
        f"      poll_interval_ms: {LANDING_POLL_MS}",
        "      ftps: false  # a loopback server of the benchmark",
        "facilities:",
    ]
    for n, facility in enumerate(facility_ids(count), start=1):
        lines.append(f"  - id: {facility}")
        if n % 5 != 0:
            names = [f"DEMO_{facility}_ZIP_PASSWORD"] + ([f"DEMO_{facility}_ZIP_PASSWORD_OLD"] if n == 1 else [])
            for name in names:
                secrets[name] = seed_secret(facility, name)
            lines.append(f"    zip_passwords: [{', '.join('{ env: %s }' % v for v in names)}]")
        secrets[api_key_var(facility)] = seed_secret(facility, "api")
        lines.append(f"    api_key: {{ env: {api_key_var(facility)} }}")
    path.write_text("\n".join(lines) + "\n")
    return secrets


def generate(bench, cache: pathlib.Path, files: int, facilities: int, seed: int) -> tuple[dict, pathlib.Path, dict]:
    """The day's archives and manifest, from the cache when an earlier run
    wrote them with the same parameters; (manifest, registry, secrets)."""
    out = cache / f"seed_day-{facilities}f-{files}a-seed{seed}"
    registry = out / "seed-facilities.yaml"
    out.mkdir(parents=True, exist_ok=True)
    secrets = write_registry(registry, facilities)
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        bench.log(f"seed day: reusing {files} archives in {out}")
    else:
        env = bench.env("gen")
        env.update(secrets)
        started = time.monotonic()
        run_medlake(bench.binary, env, "gen", "--out", str(out), "--registry", str(registry), "--files",
                    str(files), "--seed", str(seed), "--max-zip-bytes", "8000", capture=True)
        bench.log(f"seed day: generated {files} archives in {time.monotonic() - started:.0f}s")
    manifest = json.loads(manifest_path.read_text())
    manifest["_dir"] = str(out)
    return manifest, registry, secrets


class Sampler:
    """Polls a service's metric every second in a thread; keeps the maximum."""

    def __init__(self, service: Service, name: str):
        self.service, self.name, self.max = service, name, 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(1.0):
            try:
                self.max = max(self.max, metric_sum(self.service.metrics(), self.name))
            except OSError:
                pass

    def done(self) -> float:
        self.stop.set()
        self.thread.join(5)
        return self.max


def layouts(bench, env: dict) -> dict:
    out = run_medlake(bench.binary, env, "tables", "layout", "--json", capture=True)
    return {
        t["table"]: {
            "files": t["files"],
            "avg_file_kib": round(t["bytes"] / max(t["files"], 1) / 1024, 1),
            "partitions": t["partitions"],
            "max_files_per_partition": t["max_files_per_partition"],
            "log_version": t["version"],
            "load_s": round(t["load_s"], 3),
        }
        for t in json.loads(out)
    }


def landing_reaction(root: pathlib.Path, manifest: dict, facilities: list[str], drops: int,
                     timeout: float = 60) -> dict:
    """Drops `drops` archives one by one into random facility folders and
    times each until the connector moved it out of `incoming/`."""
    rng = random.Random(7)
    data = pathlib.Path(manifest["_dir"])
    seconds = []
    by_facility = {f["facility_id"]: f for f in manifest["files"]}
    for n in range(drops):
        facility = rng.choice([f for f in facilities if f in by_facility])
        source = by_facility[facility]
        target = root / facility / "incoming" / f"reaction-{n}-{source['name']}"
        part = target.with_name(target.name + ".part")
        part.write_bytes((data / source["path"]).read_bytes())
        part.rename(target)
        dropped = time.monotonic()
        while target.exists():
            if time.monotonic() - dropped > timeout:
                raise RuntimeError(f"{target} was not taken within {timeout}s")
            time.sleep(0.05)
        seconds.append(time.monotonic() - dropped)
        time.sleep(rng.uniform(0, 1))
    seconds.sort()
    pick = lambda q: seconds[min(len(seconds) - 1, int(q * len(seconds)))]  # noqa: E731
    return {"files": drops, "poll_interval_s": LANDING_POLL_MS / 1000, "p50_s": round(pick(0.5), 2),
            "p99_s": round(pick(0.99), 2), "max_s": round(seconds[-1], 2)}


def spark_group_by(bench, lake: pathlib.Path, tables: list[str]) -> dict:
    """Seconds of a Spark `GROUP BY facility_id` count over each table."""
    paths = [str(lake / t) for t in tables]
    out = subprocess.run([bench.args.python, str(REPO / "scripts" / "spark_session.py"), "group-by-times",
                          *paths], check=True, text=True, stdout=subprocess.PIPE).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_phase(bench, manifest: dict, registry: pathlib.Path, secrets: dict) -> dict:
    from bench import ADMINS, API_ADDR, latencies, manifest_totals, stage_figures  # the caller's helpers

    env = bench.fresh_phase("seed_day")
    env.update(secrets)
    env["MEDLAKE_FACILITIES_FILE"] = str(registry)
    facilities = sorted({f.split("_", 1)[1].rsplit("_API_KEY", 1)[0] for f in secrets if f.endswith("_API_KEY")})
    totals = manifest_totals(manifest)
    files = manifest["files"]
    lake = bench.phase_dir / "lake"
    with bench.pipeline(env) as run:
        root = run.start_ftp(bench.args.python, secrets.get("DEMO_FTP_PASSWORD", bench.secrets["DEMO_FTP_PASSWORD"]),
                             facilities=facilities)
        services = bench.start(run, *ADMINS)
        sessions = Sampler(services["ftp-connector"], "medlake_connector_ftp_sessions")
        started = time.monotonic()
        delivery = Delivery(pathlib.Path(manifest["_dir"]), {**bench.secrets, **secrets}, API_ADDR)
        by_ftp, by_http = delivery.deliver(files, bench.args.push_workers, ftp_root=root)
        delivered = time.monotonic() - started
        done = wait_for("the seed day", bench.sink_done(services["parser"], services["sink"], len(files)),
                        bench.args.timeout, services, poll=1.0)
        figures = stage_figures(done - started, totals, None)
        figures.update(delivered_by_ftp=by_ftp, delivered_by_http=by_http, delivery_s=round(delivered, 1))
        figures.update(latencies(services["sink"]))
        figures["services"] = {n: s.usage(totals["records"]) for n, s in services.items()}
        # Series per service: bounded labels keep this flat at any facility count.
        figures["metric_series"] = {n: len(s.metrics()) for n, s in services.items()}
        figures["rows"] = bench.reconcile(env, manifest)
        figures["sink_compactions"] = int(metric_sum(services["sink"].metrics(), "medlake_sink_compactions_total",
                                                     outcome="ok"))
        bench.log(f"seed day: {figures['files_per_s']} files/s, {figures['records_per_s']} records/s, "
                  f"{figures['seconds']} s, latency {figures['latency_s']}")
        figures["landing"] = landing_reaction(root, manifest, facilities, bench.args.seed_day_drops)
        figures["landing"]["facility_folders"] = len(facilities)
        figures["landing"]["max_ftp_sessions"] = int(sessions.done())
        figures["landing"]["unknown_folders"] = int(metric_sum(services["ftp-connector"].metrics(),
                                                               "medlake_connector_unknown_folders"))
        bench.log(f"seed day: landing {figures['landing']}")
    tables = {"after_the_day": layouts(bench, env)}
    started = time.monotonic()
    run_medlake(bench.binary, env, "maintain", capture=True)
    figures["maintain_s"] = round(time.monotonic() - started, 1)
    tables["after_maintain"] = layouts(bench, env)
    data_sets = sorted(t for t in tables["after_maintain"] if not t.startswith("_"))
    tables["spark_group_by_facility"] = spark_group_by(bench, lake, data_sets)
    figures["tables"] = tables
    bench.log(f"seed day: tables {json.dumps(tables)}")
    return figures
