"""The shipped alert rules: valid for Prometheus, and each fires on the shape it is for (promtool)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from tasks import metrics

RULES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "deploy", "prometheus")
EXPORTER = os.path.join(os.path.dirname(RULES_DIR), "..", "workers", "metrics_exporter.py")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: install Debian's prometheus package (make test-packages does)"
    return subprocess.run([tool, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_rules_and_the_example_config():
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0 and "SUCCESS: 8 rules found" in checked.stdout, checked.stdout + checked.stderr
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_each_rule_fires_on_its_shape_and_not_on_calm():
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_the_rules_use_only_metrics_the_exporter_serves():
    exported = {m.name for m in metrics.COUNTERS} | {m.name + "_total" for m in metrics.COUNTERS}
    exported |= set(re.findall(r'"(plaud_[a-z_]+)"', open(EXPORTER).read()))
    exported |= {m.name for m in metrics.HISTOGRAMS}
    used = set(re.findall(r"\b(plaud_[a-z_]+)\b", open(os.path.join(RULES_DIR, "alerts.yml")).read()))
    assert used and used <= exported, used - exported
