"""Tests of the benchmark's own arithmetic (scripts/medlake_local.py, used by
scripts/bench.py): Prometheus text parsing and histogram quantiles. Run by
`make test`."""

import pathlib
import sys
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import medlake_local  # noqa: E402
import seed_day  # noqa: E402

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


if __name__ == "__main__":
    unittest.main()
