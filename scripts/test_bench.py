"""Tests of the benchmark's own arithmetic (scripts/medlake_local.py,
scripts/serve_bench.py, used by scripts/bench.py): Prometheus text parsing
and histogram quantiles, the serve phase's percentiles, customers and
parameters. Run by `make test`."""

import hashlib
import pathlib
import random
import sys
import tempfile
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402
import medlake_local  # noqa: E402
import seed_day  # noqa: E402
import serve_bench  # noqa: E402

TEXT = """\
# HELP medlake_sink_file_to_table_seconds Seconds from arrival to commit.
# TYPE medlake_sink_file_to_table_seconds histogram
medlake_sink_file_to_table_seconds_bucket{dataset="a",le="1"} 10
medlake_sink_file_to_table_seconds_bucket{dataset="a",le="2"} 50
medlake_sink_file_to_table_seconds_bucket{dataset="a",le="+Inf"} 60
medlake_sink_file_to_table_seconds_sum{dataset="a"} 90
medlake_sink_file_to_table_seconds_count{dataset="a"} 60
medlake_sink_file_to_table_seconds_bucket{dataset="b",le="1"} 30
medlake_sink_file_to_table_seconds_bucket{dataset="b",le="2"} 40
medlake_sink_file_to_table_seconds_bucket{dataset="b",le="+Inf"} 40
medlake_sink_file_to_table_seconds_sum{dataset="b"} 30
medlake_sink_file_to_table_seconds_count{dataset="b"} 40
medlake_parser_files_total{status="processed"} 7
medlake_parser_files_total{status="rejected"} 2
medlake_ready 1
"""


class BenchArithmetic(unittest.TestCase):
    def setUp(self):
        self.samples = medlake_local.parse_metrics(TEXT)

    def test_sums_over_labels_and_filters_by_label(self):
        self.assertEqual(medlake_local.metric_sum(self.samples, "medlake_parser_files_total"), 9)
        self.assertEqual(
            medlake_local.metric_sum(self.samples, "medlake_parser_files_total", status="rejected"), 2)
        self.assertEqual(medlake_local.metric_sum(self.samples, "medlake_ready"), 1)

    def test_quantiles_interpolate_inside_buckets_like_promql(self):
        # Summed over data sets: le=1: 40, le=2: 90, +Inf: 100.
        q = medlake_local.histogram_quantiles(self.samples, "medlake_sink_file_to_table_seconds",
                                              qs=(0.2, 0.5, 0.9, 0.95))
        self.assertAlmostEqual(q["p20"], 0.5)   # 20 of 40 in [0, 1]
        self.assertAlmostEqual(q["p50"], 1.2)   # 10 of 50 in (1, 2]
        self.assertAlmostEqual(q["p90"], 2.0)   # the top of (1, 2]
        self.assertAlmostEqual(q["p95"], 2.0)   # beyond the last finite bucket: its bound
        self.assertEqual(q["count"], 100)
        self.assertAlmostEqual(q["mean"], 1.2)

    def test_no_observations_give_no_quantiles(self):
        q = medlake_local.histogram_quantiles([], "medlake_sink_file_to_table_seconds")
        self.assertIsNone(q["p99"])
        self.assertIsNone(q["mean"])


class SeedRegistry(unittest.TestCase):
    def test_the_seed_registry_names_every_secret_and_stays_the_same(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / "r.yaml"
            secrets = seed_day.write_registry(path, 10)
            text = path.read_text()
            self.assertEqual(seed_day.write_registry(path, 10), secrets, "cached archives stay readable")
        self.assertEqual(text.count("  - id: S"), 10)
        self.assertIn('directory: "/{facility}/incoming"', text)
        self.assertIn(f"sessions: {seed_day.LANDING_SESSIONS}", text)
        # Every facility has an API key; every fifth has no zip password; S0001 two.
        self.assertEqual(sum(k.endswith("_API_KEY") for k in secrets), 10)
        self.assertEqual(sum("_ZIP_PASSWORD" in k for k in secrets), 9)
        self.assertNotIn("DEMO_S0005_ZIP_PASSWORD", secrets)
        self.assertIn("DEMO_S0001_ZIP_PASSWORD_OLD", secrets)
        for name in secrets:
            self.assertIn(f"{{ env: {name} }}", text)
            self.assertNotIn(secrets[name], text, "the registry names secrets, never holds them")


def sample(report, ms, rows=1, error=None, busy_429=0, busy_503=0):
    out = {"report": report, "ms": ms, "attempt_ms": ms / 2, "busy_429": busy_429, "busy_503": busy_503}
    if error:
        out["error"] = error
    else:
        out["rows"] = rows
    return out


class ServeArithmetic(unittest.TestCase):
    def test_percentiles_are_nearest_rank(self):
        values = list(range(1, 101))  # 1..100
        random.Random(1).shuffle(values)
        self.assertEqual(serve_bench.percentile(values, 0.5), 50)
        self.assertEqual(serve_bench.percentile(values, 0.95), 95)
        self.assertEqual(serve_bench.percentile(values, 1.0), 100)
        self.assertEqual(serve_bench.percentile([7.0], 0.95), 7.0)
        # 20 values: the p95 is the 19th, so one slow request in 20 does not set it.
        self.assertEqual(serve_bench.percentile([10] * 19 + [900], 0.95), 10)
        self.assertEqual(serve_bench.percentile([10] * 18 + [800, 900], 0.95), 800)
        self.assertEqual(serve_bench.latency([]), {"requests": 0, "p50_ms": None, "p95_ms": None, "max_ms": None})
        self.assertEqual(serve_bench.latency([3.0, 1.0, 2.0]),
                         {"requests": 3, "p50_ms": 2.0, "p95_ms": 3.0, "max_ms": 3.0})

    def test_pass_figures_per_report_overall_and_busy_answers(self):
        samples = [sample("a", 10), sample("a", 30, rows=0, busy_503=2), sample("b", 20, busy_429=1),
                   sample("b", 40, error="400 timeout")]
        f = serve_bench.pass_figures(samples, 2.0)
        self.assertEqual(f["requests"], 4)
        self.assertEqual(f["requests_per_s"], 2.0)
        self.assertEqual((f["busy_429"], f["busy_503"]), (1, 2))
        self.assertEqual(f["failed"], {"400 timeout": 1})
        self.assertEqual(f["overall"], {"requests": 4, "p50_ms": 20, "p95_ms": 40, "max_ms": 40,
                                        "attempt_p95_ms": 20})
        self.assertEqual(f["reports"]["a"]["answers_with_rows"], 1)
        self.assertEqual(f["reports"]["b"]["failed"], 1)
        self.assertEqual(f["reports"]["b"]["p95_ms"], 40, "a failed request counts with its latency")

    def test_targets_take_the_worst_report_and_fail_on_failed_requests(self):
        fast = serve_bench.pass_figures([sample("a", 5), sample("b", 40)], 1.0)
        slow = serve_bench.pass_figures([sample("a", 900), sample("b", 1200)], 1.0)
        t = serve_bench.judge(slow, fast, 900.0)
        self.assertEqual((t["uncached_p95_ms"]["worst_report"], t["uncached_p95_ms"]["value"]), ("b", 1200))
        self.assertFalse(t["uncached_p95_ms"]["met"])
        self.assertTrue(t["cached_p95_ms"]["met"])
        self.assertTrue(t["peak_rss_mib"]["met"])
        self.assertFalse(serve_bench.judge(slow, fast, 1500.0)["peak_rss_mib"]["met"])
        failing = serve_bench.pass_figures([sample("a", 5), sample("b", 5, error="400 memory")], 1.0)
        self.assertFalse(serve_bench.judge(failing, failing, 1.0)["cached_p95_ms"]["met"])
        text = "\n".join(serve_bench.summary({"uncached": dict(slow, serve_cpu_s=1, peak_rss_mib=2),
                                               "cached": dict(fast, serve_cpu_s=1, peak_rss_mib=2),
                                               "targets": t}))
        self.assertIn("target uncached p95 <= 1000 ms per report: MISSED (worst b 1,200 ms)", text)
        self.assertIn("target cached p95 <= 50 ms per report: met", text)

    def test_a_report_answering_no_rows_fails_the_phase(self):
        empty = serve_bench.pass_figures([sample("a", 5, rows=0), sample("dead", 5, rows=0),
                                          sample("timed_out", 5, error="400 timeout")], 1.0)
        serve_bench.check_rows(empty, {"a", "dead"})
        with self.assertRaisesRegex(RuntimeError, "report a answered 1 requests without a row"):
            serve_bench.check_rows(empty, {"dead"})

    def test_retry_after(self):
        self.assertEqual(serve_bench.retry_after_s("2"), 2.0)
        self.assertEqual(serve_bench.retry_after_s(None), 1.0)
        self.assertEqual(serve_bench.retry_after_s("Wed, 21 Oct 2026 07:28:00 GMT"), 1.0)

    def test_customers_share_every_facility_once(self):
        facilities = seed_day.facility_ids(8000)
        customers = serve_bench.assign_customers(facilities, 1100, 7)
        self.assertEqual(len(customers), 1100)
        held = [f for _, fs in customers for f in fs]
        self.assertEqual(sorted(held), facilities)
        sizes = [len(fs) for _, fs in customers]
        self.assertGreaterEqual(min(sizes), 1)
        self.assertLess(max(sizes), 30, "a handful each")
        self.assertEqual(customers[0][0], "C0001")
        self.assertEqual(serve_bench.assign_customers(facilities, 1100, 7), customers, "the same on every run")

    def test_the_registry_holds_digests_never_tokens(self):
        customers = [("C0001", ["S0001", "S0002"]), ("C0002", ["S0003"])]
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / "customers.yaml"
            tokens = serve_bench.write_registry(path, customers)
            text = path.read_text()
        self.assertEqual(set(tokens), {"C0001", "C0002", serve_bench.ANALYST})
        self.assertIn("facilities: [S0001, S0002]", text)
        self.assertIn("all_facilities: true", text)
        for t in tokens.values():
            self.assertGreaterEqual(len(t), 16)
            self.assertNotIn(t, text)
            self.assertIn(f"token_sha256: {hashlib.sha256(t.encode()).hexdigest()}", text)

    def test_parameters_stay_in_the_customers_scope_and_the_window(self):
        report = {"name": "r", "params": [
            {"name": "facility", "type": "facility", "required": False, "default": None},
            {"name": "from", "type": "date", "required": False, "default": "-30d"},
            {"name": "to", "type": "date", "required": False, "default": "today"},
            {"name": "loinc", "type": "string", "required": False, "default": None}]}
        rng = random.Random(3)
        seen = set()
        for _ in range(50):
            p = serve_bench.report_params(report, ["S0001", "S0002"], ("2024-03-01", "2026-12-06"), rng)
            self.assertEqual((p["from"], p["to"]), ("2024-03-01", "2026-12-06"))
            self.assertNotIn("loinc", p)
            seen.add(p.get("facility"))
        self.assertEqual(seen, {None, "S0001", "S0002"}, "one of its facilities, or all of them")
        self.assertNotIn("facility", serve_bench.report_params(report, None, ("a", "b"), rng))
        required = {"name": "q", "params": [{"name": "n", "type": "integer", "required": True, "default": None}]}
        with self.assertRaisesRegex(RuntimeError, "required integer parameter n"):
            serve_bench.report_params(required, ["S0001"], ("a", "b"), rng)
        self.assertEqual(serve_bench.distinct([("r", {"a": "1", "b": "2"}), ("r", {"b": "2", "a": "1"}),
                                               ("s", {"a": "1"})]),
                         [("r", {"a": "1", "b": "2"}), ("s", {"a": "1"})])


class WorkFolder(unittest.TestCase):
    def test_the_work_folder_is_emptied_but_for_what_is_kept(self):
        with tempfile.TemporaryDirectory() as tmp:
            work = pathlib.Path(tmp) / "work"
            (work / "seed_day" / "lake").mkdir(parents=True)
            (work / "stages").mkdir()
            (work / "perf-sink.txt").write_text("x")
            bench.clear_work(work, {"seed_day"})
            self.assertEqual([p.name for p in work.iterdir()], ["seed_day"])
            self.assertTrue((work / "seed_day" / "lake").is_dir())
            bench.clear_work(work, set())
            self.assertEqual(list(work.iterdir()), [])
            with self.assertRaises(SystemExit):
                serve_bench.seed_lake(work)


if __name__ == "__main__":
    unittest.main()
