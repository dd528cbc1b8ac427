"""The `serve` phase of the benchmark (scripts/bench.py): the customers'
reports (`medlake serve`) over the lake a seed day left.

  - the lake is the one of the `seed_day` phase (`<work>/seed_day/lake`):
    from the same run, or, when `serve` runs without `seed_day`, the one an
    earlier run left there (bench.py keeps that folder then);
  - a customer registry of 1,100 customers over the seed registry's 8,000
    facilities (a handful each, every facility in one customer), one user
    each with its token given as `token_sha256`, plus one analyst who sees
    every facility;
  - 20 client threads, each signed in as another customer on one kept-alive
    connection, ask the reports in turn (`POST /v1/reports/{name}`) with
    parameters valid for that customer: a facility parameter is one of its
    facilities or left out (all of its facilities), date ranges cover the
    whole seed day (from the first event day to the last day a file was
    received, asked of the lake), other optional parameters left out. A 429
    or 503 answer is counted and the request sent again after Retry-After;
    its latency is what the client saw, waits included;
  - uncached: `serve` runs with `MEDLAKE_SERVE__CACHE_BYTES=0` for
    `--serve-seconds`; then the analyst runs each report once, alone;
  - cached: `serve` again with the configuration's cache, every distinct
    request of the uncached pass once (warm-up), then every client's
    requests of the uncached pass again, in the same order;
  - per pass: p50/p95/max per report and overall, requests/s, 429 and 503
    answers, failed requests by code, CPU and peak RSS of `serve`; compared
    with the targets (TARGETS).

`serve` appends one `_audit` row per query to the lake, as deployed.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import pathlib
import random
import shutil
import threading
import time

from medlake_local import REPO, Service, metric_sum, stop_process

CLIENTS = 20
CUSTOMERS = 1100
ANALYST = "analysts"
# p95 of every report, uncached and cached; peak RSS of `serve`.
TARGETS = {"uncached_p95_ms": 1000, "cached_p95_ms": 50, "peak_rss_mib": 1024}
# The longest a request is sent again after 429/503 before it counts as failed.
BUSY_GIVE_UP_S = 300
# Date parameters that end a range; every other date parameter starts one.
RANGE_ENDS = ("to", "until")


# ---------------------------------------------------------------- registry


def assign_customers(facilities: list[str], count: int, seed: int) -> list[tuple[str, list[str]]]:
    """`count` customers (`C0001`…) sharing every facility once: one each,
    the others spread at random (a handful each on average)."""
    rng = random.Random(seed)
    ids = list(facilities)
    rng.shuffle(ids)
    count = min(count, len(ids))
    sizes = [1] * count
    for _ in range(len(ids) - count):
        sizes[rng.randrange(count)] += 1
    out, at = [], 0
    for n, size in enumerate(sizes, start=1):
        out.append((f"C{n:04d}", sorted(ids[at:at + size])))
        at += size
    return out


def token(customer: str) -> str:
    """A made-up token of the customer's one user, the same on every run."""
    return "bench-" + hashlib.sha256(f"medlake-bench-serve-{customer}".encode()).hexdigest()[:32]


def write_registry(path: pathlib.Path, customers: list[tuple[str, list[str]]]) -> dict[str, str]:
    """Writes the customer registry (tokens as SHA-256 digests only) with
    the analyst; returns the token of each customer id."""
    tokens = {}
    lines = [
        "# The benchmark's customer registry (scripts/serve_bench.py): token digests; the script holds the tokens.",
        "customers:",
    ]
    for customer, facilities in customers:
        tokens[customer] = token(customer)
        lines += [
            f"  - id: {customer}",
            f"    facilities: [{', '.join(facilities)}]",
            f"    users: [{{ name: {customer.lower()}-bench, "
            f"token_sha256: {hashlib.sha256(tokens[customer].encode()).hexdigest()} }}]",
        ]
    tokens[ANALYST] = token(ANALYST)
    lines += [
        f"  - id: {ANALYST}",
        "    all_facilities: true",
        # As config/customers.yaml gives the analysts: one query at a time,
        # 256 MiB and 2 minutes for every facility at once.
        "    limits: { query_memory_bytes: 268435456, query_timeout_ms: 120000, max_queries: 1 }",
        f"    users: [{{ name: analyst-bench, token_sha256: {hashlib.sha256(tokens[ANALYST].encode()).hexdigest()} }}]",
    ]
    path.write_text("\n".join(lines) + "\n")
    return tokens


# ---------------------------------------------------------------- requests


def report_params(report: dict, facilities: list[str] | None, window: tuple[str, str], rng: random.Random) -> dict:
    """Parameters of one run of `report` (as GET /v1/reports lists it) for
    a customer with `facilities` (None: the analyst): a facility parameter
    one of them or left out (all of them); dates the `window` (first day,
    last day); other optional parameters left out."""
    params = {}
    for param in report["params"]:
        name, kind = param["name"], param["type"]
        if kind == "facility":
            choice = rng.choice([None, *facilities]) if facilities else None
            if choice is not None:
                params[name] = choice
        elif kind == "date":
            params[name] = window[1] if name in RANGE_ENDS else window[0]
        elif param.get("required") and param.get("default") is None:
            raise RuntimeError(f"report {report['name']}: no value for its required {kind} parameter {name}")
    return params


def retry_after_s(header: str | None) -> float:
    """Seconds a Retry-After header asks to wait (delay-seconds form; 1 s
    when absent or a date)."""
    try:
        return max(0.0, float(header))
    except (TypeError, ValueError):
        return 1.0


class Client:
    """One signed-in user of `serve` on one kept-alive HTTP connection."""

    def __init__(self, addr: str, token_: str):
        host, port = addr.rsplit(":", 1)
        self.host, self.port, self.token = host, int(port), token_
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: dict) -> tuple[int, str | None, bytes]:
        """(status, Retry-After, body) of a POST; a kept-alive connection the
        server closed meanwhile is opened again, once."""
        data = json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        while True:
            fresh = self.conn is None
            if fresh:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                self.conn.request("POST", path, body=data, headers=headers)
                reply = self.conn.getresponse()
                return reply.status, reply.getheader("Retry-After"), reply.read()
            except (http.client.HTTPException, ConnectionError) as error:
                self.conn.close()
                self.conn = None
                if fresh:
                    raise RuntimeError(f"POST {path}: {error}") from error

    def query(self, sql: str) -> list[dict]:
        """The rows of ad-hoc SQL; fails unless answered 200."""
        status, _, body = self.post("/v1/query", {"sql": sql})
        if status != 200:
            raise RuntimeError(f"serve answered {status} to {sql!r}: {body[:300]!r}")
        return json.loads(body)["rows"]

    def report(self, name: str, params: dict) -> dict:
        """Runs a report, sent again after Retry-After while answered 429 or
        503; one sample: ms (from the first send to the answer), attempt_ms
        (the answered send), 429 and 503 answers, rows or the error."""
        started = time.monotonic()
        busy = {429: 0, 503: 0}
        while True:
            attempt = time.monotonic()
            status, retry_after, body = self.post(f"/v1/reports/{name}", {"params": params})
            if status not in busy or time.monotonic() - started > BUSY_GIVE_UP_S:
                break
            busy[status] += 1
            time.sleep(retry_after_s(retry_after))
        done = time.monotonic()
        sample = {"report": name, "ms": (done - started) * 1000, "attempt_ms": (done - attempt) * 1000,
                  "busy_429": busy[429], "busy_503": busy[503]}
        if status == 200:
            sample["rows"] = json.loads(body)["row_count"]
            return sample
        try:
            code = json.loads(body).get("code", "")
        except ValueError:
            code = ""
        if status in (401, 404) or code in ("invalid", "bad_request"):
            # The benchmark asked wrongly: no figure of such a run is worth keeping.
            raise RuntimeError(f"report {name} {params}: {status} {body[:300]!r}")
        sample["error"] = f"{status} {code}".strip()
        return sample

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def cycle(reports: list[dict], facilities: list[str], window: tuple[str, str], rng: random.Random, start: int):
    """Endless (report name, parameters): the reports in turn from `start`."""
    n = start
    while True:
        report = reports[n % len(reports)]
        yield report["name"], report_params(report, facilities, window, rng)
        n += 1


def distinct(requests: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The requests without repeats, in first-seen order."""
    seen, out = set(), []
    for name, params in requests:
        key = (name, json.dumps(params, sort_keys=True))
        if key not in seen:
            seen.add(key)
            out.append((name, params))
    return out


def run_pass(clients: list[Client], requests: list, seconds: float | None,
             service: Service) -> tuple[list, list, float]:
    """Every client sends its requests (an iterable each), one at a time,
    all starting together, until they run out or, with `seconds`, no new
    one after that long. Returns (samples, the requests each client sent,
    wall seconds)."""
    samples: list[list[dict]] = [[] for _ in clients]
    sent: list[list] = [[] for _ in clients]
    failures: list[BaseException] = []
    start = threading.Barrier(len(clients) + 1)

    def work(i: int) -> None:
        try:
            start.wait()
            deadline = None if seconds is None else time.monotonic() + seconds
            for name, params in requests[i]:
                if failures or (deadline is not None and time.monotonic() >= deadline):
                    break
                sent[i].append((name, params))
                samples[i].append(clients[i].report(name, params))
        except BaseException as error:  # noqa: BLE001 - re-raised by the caller
            failures.append(error)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    if service.proc.poll() is not None:
        raise RuntimeError(f"serve exited ({service.proc.returncode}); see {service.log_path}")
    if failures:
        raise failures[0]
    return [s for each in samples for s in each], sent, elapsed


# ---------------------------------------------------------------- figures


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile `q` (0-1] of `values`: the smallest value
    with at least q of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def latency(values: list[float]) -> dict:
    if not values:
        return {"requests": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    return {"requests": len(values), "p50_ms": round(percentile(values, 0.5), 1),
            "p95_ms": round(percentile(values, 0.95), 1), "max_ms": round(max(values), 1)}


def pass_figures(samples: list[dict], seconds: float) -> dict:
    """Latency per report and overall (every request, failed ones too),
    requests/s, 429 and 503 answers, failures by status and code."""
    names = sorted({s["report"] for s in samples})
    errors: dict[str, int] = {}
    for s in samples:
        if "error" in s:
            errors[s["error"]] = errors.get(s["error"], 0) + 1
    reports = {}
    for name in names:
        mine = [s for s in samples if s["report"] == name]
        figures = latency([s["ms"] for s in mine])
        figures["attempt_p95_ms"] = latency([s["attempt_ms"] for s in mine])["p95_ms"]
        figures["answers_with_rows"] = sum(1 for s in mine if s.get("rows"))
        figures["failed"] = sum(1 for s in mine if "error" in s)
        reports[name] = figures
    overall = latency([s["ms"] for s in samples])
    overall["attempt_p95_ms"] = latency([s["attempt_ms"] for s in samples])["p95_ms"]
    return {
        "seconds": round(seconds, 2),
        "requests": len(samples),
        "requests_per_s": round(len(samples) / seconds, 2) if seconds else None,
        "busy_429": sum(s["busy_429"] for s in samples),
        "busy_503": sum(s["busy_503"] for s in samples),
        "failed": errors,
        "overall": overall,
        "reports": reports,
    }


def judge(uncached: dict, cached: dict, peak_rss_mib: float) -> dict:
    """Each target: the goal, the measured figure (for latencies the worst
    report's p95) and whether it is met; a latency target is missed while
    any request of the pass failed."""
    out = {}
    for key, figures in (("uncached_p95_ms", uncached), ("cached_p95_ms", cached)):
        worst_name, worst = None, None
        for name, r in figures["reports"].items():
            if r["p95_ms"] is not None and (worst is None or r["p95_ms"] > worst):
                worst_name, worst = name, r["p95_ms"]
        failed = sum(figures["failed"].values())
        out[key] = {"goal": TARGETS[key], "worst_report": worst_name, "value": worst, "failed_requests": failed,
                    "met": worst is not None and worst <= TARGETS[key] and failed == 0}
    out["peak_rss_mib"] = {"goal": TARGETS["peak_rss_mib"], "value": round(peak_rss_mib, 1),
                           "met": peak_rss_mib <= TARGETS["peak_rss_mib"]}
    return out


def check_rows(figures: dict, may_be_empty: set[str]) -> None:
    """Fails when a report answered and never with a row (a date range that
    misses the lake's data would make a fast but empty benchmark), except
    the reports in `may_be_empty`."""
    for name, r in figures["reports"].items():
        answered = r["requests"] - r["failed"]
        if name not in may_be_empty and answered and not r["answers_with_rows"]:
            raise RuntimeError(f"serve: report {name} answered {answered} requests without a row: "
                               f"do its date parameters miss the lake's data?")


def summary(figures: dict) -> list[str]:
    """The phase's figures as lines of text, with the targets."""
    def triple(r: dict | None) -> str:
        if not r or r["p50_ms"] is None:
            return "-"
        return f"{r['p50_ms']:,.0f} / {r['p95_ms']:,.0f} / {r['max_ms']:,.0f}"

    un, ca = figures["uncached"], figures["cached"]
    lines = [f"{'report':<20} {'uncached p50/p95/max ms':>26} {'cached p50/p95/max ms':>24}"]
    for name in sorted(set(un["reports"]) | set(ca["reports"])):
        lines.append(f"{name:<20} {triple(un['reports'].get(name)):>26} {triple(ca['reports'].get(name)):>24}")
    lines.append(f"{'overall':<20} {triple(un['overall']):>26} {triple(ca['overall']):>24}")
    for label, p in (("uncached", un), ("cached", ca)):
        lines.append(f"{label}: {p['requests']} requests in {p['seconds']} s, {p['requests_per_s']} requests/s, "
                     f"{p['busy_429']} x 429, {p['busy_503']} x 503, failed {p['failed'] or 'none'}, "
                     f"serve CPU {p['serve_cpu_s']} s, peak RSS {p['peak_rss_mib']} MiB")
    for key, t in figures["targets"].items():
        verdict = "met" if t["met"] else "MISSED"
        if key == "peak_rss_mib":
            lines.append(f"target peak RSS <= {t['goal']} MiB: {verdict} ({t['value']} MiB)")
        else:
            worst = f"{t['value']:,.0f} ms" if t["value"] is not None else "no answer"
            failed = f", {t['failed_requests']} failed requests" if t["failed_requests"] else ""
            lines.append(f"target {key.split('_')[0]} p95 <= {t['goal']} ms per report: {verdict} "
                         f"(worst {t['worst_report']} {worst}{failed})")
    return lines


# ---------------------------------------------------------------- the phase


def seed_lake(work: pathlib.Path) -> pathlib.Path:
    """The lake the seed_day phase left; fails when there is none."""
    lake = work / "seed_day" / "lake"
    missing = [t for t in ("_files", "adt_events") if not (lake / t / "_delta_log").is_dir()]
    if missing:
        raise SystemExit(f"bench: the serve phase reads the lake of the seed_day phase, and {lake} has no "
                         f"{' or '.join(missing)} table: run --phases seed_day,serve (or seed_day once before)")
    return lake


def data_window(analyst: Client) -> dict:
    """The seed day's dates in the lake: event days (adt_events) and the
    days files were received (_files); and the dead letters. The first
    query also opens every table, before anything is timed."""
    events = analyst.query("SELECT CAST(min(event_time) AS DATE) AS first_day, "
                           "CAST(max(event_time) AS DATE) AS last_day FROM adt_events")[0]
    received = analyst.query("SELECT CAST(min(received_at) AS DATE) AS first_day, "
                             "CAST(max(received_at) AS DATE) AS last_day, count(*) AS files FROM _files")[0]
    try:
        dead = analyst.query("SELECT count(*) AS n FROM _dead_letters")[0]["n"]
    except RuntimeError:
        dead = 0  # no table yet: nothing was rejected
    days = [d for d in (events["first_day"], events["last_day"], received["first_day"], received["last_day"]) if d]
    if not days:
        raise RuntimeError("serve: the seed-day lake has no events and no files")
    return {"event_days": [events["first_day"], events["last_day"]],
            "received_days": [received["first_day"], received["last_day"]],
            "files": received["files"], "dead_letters": dead, "window": [min(days), max(days)]}


def start_serve(bench, env: dict, log_dir: pathlib.Path, admin: str) -> Service:
    service = Service("serve", bench.binary, env, log_dir, admin)
    bench.log(f"serve: pid {service.proc.pid}, admin http://{admin}, log {service.log_path}")
    try:
        service.wait_ready(120)
    except BaseException:
        stop_process(service.proc, "serve", 60, bench.log)
        raise
    return service


def list_reports(addr: str, token_: str) -> list[dict]:
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("GET", "/v1/reports", headers={"Authorization": f"Bearer {token_}"})
        reply = conn.getresponse()
        body = reply.read()
    finally:
        conn.close()
    if reply.status != 200:
        raise RuntimeError(f"GET /v1/reports: {reply.status} {body[:300]!r}")
    return json.loads(body)["reports"]


def run_phase(bench, addr: str, admin: str, facilities: list[str]) -> dict:
    args = bench.args
    lake = seed_lake(bench.work)
    phase_dir = bench.work / "serve"
    shutil.rmtree(phase_dir, ignore_errors=True)
    (phase_dir / "logs").mkdir(parents=True)
    customers = assign_customers(facilities, args.serve_customers, args.seed + 4)
    tokens = write_registry(phase_dir / "customers.yaml", customers)
    env = bench.env("serve")
    env.update(
        MEDLAKE_LAKE_URI=str(lake),
        MEDLAKE_SERVE__LISTEN=addr,
        MEDLAKE_SERVE__CUSTOMERS_FILE=str(phase_dir / "customers.yaml"),
        MEDLAKE_SERVE__REPORTS_DIR=str(REPO / "reports"),
    )
    rng = random.Random(args.seed + 5)
    chosen = rng.sample(customers, min(args.serve_clients, len(customers)))
    scopes = {c: f for c, f in chosen}
    sizes = [len(f) for _, f in customers]
    figures: dict = {
        "lake": str(lake),
        "customers": len(customers),
        "facilities": len(facilities),
        "facilities_per_customer": {"min": min(sizes), "p50": percentile(sizes, 0.5), "max": max(sizes)},
        "clients": len(chosen),
        "client_facilities": sum(len(f) for f in scopes.values()),
        "uncached_by": "serve.cache_bytes=0 (MEDLAKE_SERVE__CACHE_BYTES=0)",
        "seconds_asked": args.serve_seconds,
    }

    # Uncached: no answer is kept, so repeated questions cost a query each.
    service = start_serve(bench, dict(env, MEDLAKE_SERVE__CACHE_BYTES="0"), phase_dir / "logs", admin)
    try:
        analyst = Client(addr, tokens[ANALYST])
        started = time.monotonic()
        data = data_window(analyst)
        data["first_queries_s"] = round(time.monotonic() - started, 2)
        window = tuple(data["window"])
        figures["data"] = data
        reports = list_reports(addr, tokens[ANALYST])
        figures["reports"] = [r["name"] for r in reports]
        bench.log(f"serve: {len(customers)} customers, {len(reports)} reports, dates {window[0]}..{window[1]}; "
                  f"uncached, {len(chosen)} clients for {args.serve_seconds:g} s")
        clients = [Client(addr, tokens[c]) for c, _ in chosen]
        plans = [cycle(reports, scopes[c], window, random.Random(args.seed + 6 + i), i)
                 for i, (c, _) in enumerate(chosen)]
        cpu = service.cpu_seconds()
        samples, sent, seconds = run_pass(clients, plans, args.serve_seconds, service)
        uncached = pass_figures(samples, seconds)
        uncached["serve_cpu_s"] = round(service.cpu_seconds() - cpu, 1)
        uncached["peak_rss_mib"] = round(service.peak_rss_mib(), 1)
        # Reports of the dead letters find none when the day rejected nothing.
        no_dead_letters = {r["name"] for r in reports if "_dead_letters" in r["sql"]}
        check_rows(uncached, set() if data["dead_letters"] else no_dead_letters)
        bench.log(f"serve: uncached {uncached['requests_per_s']} requests/s, overall {uncached['overall']}")
        # The analyst, alone: each report once over every facility.
        solo = {}
        for report in reports:
            sample = analyst.report(report["name"], report_params(report, None, window, rng))
            solo[report["name"]] = {k: (round(v, 1) if isinstance(v, float) else v)
                                    for k, v in sample.items() if k in ("ms", "rows", "error")}
        figures["analyst_alone"] = {"reports": solo, "peak_rss_mib": round(service.peak_rss_mib(), 1)}
        bench.log(f"serve: the analyst alone {solo}")
        for client in [analyst, *clients]:
            client.close()
    finally:
        stop_process(service.proc, "serve", 60, bench.log)

    # Cached: the configuration's cache, warmed with every distinct request.
    service = start_serve(bench, env, phase_dir / "logs", admin)
    try:
        clients = [Client(addr, tokens[c]) for c, _ in chosen]
        warm = [distinct(s) for s in sent]
        _, _, warm_seconds = run_pass(clients, warm, None, service)
        bench.log(f"serve: cache warmed with {sum(map(len, warm))} requests in {warm_seconds:.1f} s; cached pass")
        before, cpu = service.metrics(), service.cpu_seconds()
        samples, _, seconds = run_pass(clients, sent, None, service)
        after = service.metrics()
        cached = pass_figures(samples, seconds)
        cached["warm_up_requests"] = sum(map(len, warm))
        cached["warm_up_s"] = round(warm_seconds, 2)
        cached["cache_lookups"] = {
            o: int(metric_sum(after, "medlake_serve_cache_lookups_total", outcome=o)
                   - metric_sum(before, "medlake_serve_cache_lookups_total", outcome=o))
            for o in ("hit", "miss")}
        cached["serve_cpu_s"] = round(service.cpu_seconds() - cpu, 1)
        cached["peak_rss_mib"] = round(service.peak_rss_mib(), 1)
        for client in clients:
            client.close()
    finally:
        stop_process(service.proc, "serve", 60, bench.log)

    figures["uncached"] = uncached
    figures["cached"] = cached
    figures["peak_rss_mib"] = max(uncached["peak_rss_mib"], cached["peak_rss_mib"])
    figures["targets"] = judge(uncached, cached, figures["peak_rss_mib"])
    for line in summary(figures):
        bench.log(f"serve: {line}")
    return figures
