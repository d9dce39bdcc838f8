#!/usr/bin/python3
"""Self-test of scripts/fidelity-report on a synthetic `headwise eval` JSON.

Policies: exact (always right), hybrid@0.25 (wrong at 8K only: 75%), quest@0.1
(wrong at odd depths: 50%). Checks the PNGs, the accuracy table, the relative
image paths, that text outside the markers survives a re-run, and that a JSON
without bands skips that figure.

Usage: /usr/bin/python3 scripts/fidelity_report_test.py
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fidelity-report")
BEGIN = "<!-- fidelity-report:begin -->"
END = "<!-- fidelity-report:end -->"
LENGTHS = [1024, 2048, 4096, 8192]
DEPTHS = [i / 10 for i in range(10)]


def synthetic_report():
    correct = {"exact": lambda n, i: True,
               "hybrid@0.25": lambda n, i: n != 8192,
               "quest@0.1": lambda n, i: i % 2 == 0}
    cells = [{"length": n, "depth": d, "prompt_tokens": n - 5, "key": "48213",
              "results": {label: {"answer": "The pass key is 48213.", "correct": ok(n, i),
                                  "decode_tokens_per_s": 20.0 + i}
                          for label, ok in correct.items()}}
             for n in LENGTHS for i, d in enumerate(DEPTHS)]
    bands = [{"start": 1024 + 32 * b, "end": 1056 + 32 * b,
              "top1": {"hybrid@0.25": 0.97 - 0.01 * b, "quest@0.1": 0.9},
              "kl": {"hybrid@0.25": 0.01 * (b + 1), "quest@0.1": 0.05}} for b in range(4)]
    return {"command": "headwise eval --synthetic", "model": "models/test.gguf",
            "machine": "test VM", "date": "2026-11-23",
            "policies": [{"label": "exact", "describe": "exact"},
                         {"label": "hybrid@0.25", "describe": "hybrid(budget=0.25)"},
                         {"label": "quest@0.1", "describe": "quest(budget=0.1)"}],
            "passkey": {"lengths": LENGTHS, "depths": DEPTHS, "cells": cells},
            "bands": {"text": "/usr/share/common-licenses/GPL-3", "positions": 32,
                      "rows": bands}}


def table_row(markdown, label):
    """The cells of the first table row whose first cell is `label` (in backticks)."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == f"`{label}`":
            return cells
    raise AssertionError(f"no table row for {label}")


class FidelityReportTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.out_dir = os.path.join(self.dir, "docs", "img")
        self.md = os.path.join(self.dir, "docs", "FIDELITY.md")

    def tearDown(self):
        self.tmp.cleanup()

    def run_report(self, report):
        src = os.path.join(self.dir, "eval.json")
        with open(src, "w") as f:
            json.dump(report, f)
        subprocess.run([sys.executable, SCRIPT, src, "--out-dir", self.out_dir, "--md", self.md],
                       check=True, capture_output=True, text=True)
        with open(self.md) as f:
            return f.read()

    def assert_png(self, name):
        with open(os.path.join(self.out_dir, name), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_figures_and_tables(self):
        markdown = self.run_report(synthetic_report())
        self.assert_png("fidelity_passkey.png")
        self.assert_png("fidelity_bands.png")
        self.assertIn("# Fidelity of the approximate attention policies", markdown)
        self.assertEqual(markdown.count(BEGIN), 1)
        self.assertEqual(markdown.count(END), 1)
        self.assertEqual(table_row(markdown, "exact")[2:], ["100%"] * 5 + ["—"])
        self.assertEqual(table_row(markdown, "hybrid@0.25")[2:],
                         ["100%", "100%", "100%", "0%", "75%", "-25.0"])
        self.assertEqual(table_row(markdown, "quest@0.1")[2:], ["50%"] * 5 + ["-50.0"])
        self.assertIn("](img/fidelity_passkey.png)", markdown)
        self.assertIn("](img/fidelity_bands.png)", markdown)
        self.assertIn("| 1024–1056 | 0.970 | 0.01 | 0.900 | 0.05 |", markdown)
        self.assertIn("headwise eval --synthetic", markdown)

    def test_rerun_keeps_text_outside_markers(self):
        os.makedirs(os.path.dirname(self.md))
        with open(self.md, "w") as f:
            f.write(f"# Hand-written title\n\nIntro kept.\n\n{BEGIN}\nstale table\n{END}\n\n"
                    "Trailing notes kept.\n")
        markdown = self.run_report(synthetic_report())
        self.assertTrue(markdown.startswith("# Hand-written title\n\nIntro kept.\n\n" + BEGIN))
        self.assertTrue(markdown.endswith(END + "\n\nTrailing notes kept.\n"))
        self.assertNotIn("stale table", markdown)
        self.assertEqual(markdown.count(BEGIN), 1)
        self.assertEqual(markdown, self.run_report(synthetic_report()))

    def test_missing_bands_skips_that_figure(self):
        report = synthetic_report()
        del report["bands"]
        markdown = self.run_report(report)
        self.assert_png("fidelity_passkey.png")
        self.assertFalse(os.path.exists(os.path.join(self.out_dir, "fidelity_bands.png")))
        self.assertIn("No position bands in the JSON", markdown)


if __name__ == "__main__":
    unittest.main()
