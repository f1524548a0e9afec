"""The Grafana dashboard (grafana/dashboards/genai-power.json) queries only what the Prometheus exporter
exports: every metric name and every label it filters, groups or draws a legend by, checked against a
real scrape of telemetry.prometheus fed by two daemons (two hosts) and a collector."""
from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared.messages import BATCH_START, REQ_END, REQ_START, TEL_GPU, TEL_HB, TEL_HOST, Stamper
from telemetry.prometheus import TelemetryMetrics

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "dashboards" / "genai-power.json"
PROVISIONING = ROOT / "grafana" / "provisioning" / "dashboards" / "genai-power.yaml"
METRIC_RE = re.compile(r"\b(genai_[a-z0-9_]+)\s*(\{[^}]*\})?")
MATCHER_RE = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
BY_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND_RE = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
LABEL_VALUES_RE = re.compile(r"label_values\(\s*(genai_[a-z0-9_]+)(\{[^}]*\})?\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)")


def exported() -> dict[str, set[str]]:
    """Sample name → label names, from a scrape of the exporter after two daemons and a collector spoke."""
    m = TelemetryMetrics()
    for host, uuid in (("gpu-a", "GPU-aaaa"), ("gpu-b", "GPU-bbbb")):
        st = Stamper(f"telemetry@{host}").stamp
        m.update(TEL_GPU, st({"gpu": 0, "uuid": uuid, "name": "RTX 4090", "power_kind": "instant", "power_mw": 250_000,
                              "energy_mj": 1_000_000, "util_gpu_pct": 90, "util_mem_pct": 40, "mem_used_mib": 8000,
                              "mem_total_mib": 24000, "temp_c": 70, "sm_clock_mhz": 2500}))
        m.update(TEL_HOST, st({"cpu_pct": 20.0, "cpu_pct_per_core": [10.0, 30.0], "mem_used_mib": 9000,
                               "mem_total_mib": 64000, "swap_used_mib": 0, "rapl_uj": {"intel-rapl:0/package-0": 5}}))
        m.update(TEL_HB, st({"gpu_source": "nvml", "simulated": False, "gpus": 1,
                             "sources": {"gpu": {"target_hz": 100, "achieved_hz": 99.5, "dropped_ticks": 0}}}))
    col = Stamper("collector@laptop").stamp
    m.update(BATCH_START, col({"batch": "b", "base_url": "http://gpu-a:11434"}))
    m.update(REQ_START, col({"rid": "b/m/0/short/1", "model": "qwen3:4b"}))
    m.update(REQ_END, col({"rid": "b/m/0/short/1", "ok": True}))
    reg = CollectorRegistry(auto_describe=False)
    reg.register(m)
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def queries(dash: dict) -> list[tuple[str, str, str]]:
    """(where, expression, legend) of every panel target and every query variable."""
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t['refId']}", t["expr"], t.get("legendFormat", "")))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((f"variable {v['name']}", q, ""))
    return out


def problems(dash: dict, have: dict[str, set[str]]) -> list[str]:
    """Every metric or label a query uses that the exporter does not export under that name."""
    out = []
    for where, expr, legend in queries(dash):
        found = METRIC_RE.findall(expr)
        if not found:
            out.append(f"{where}: no genai_ metric in {expr!r}")
        common: set[str] | None = None
        for name, matchers in found:
            if name not in have:
                out.append(f"{where}: metric {name} is not exported")
                continue
            labels = have[name]
            common = labels if common is None else common & labels
            for lab in MATCHER_RE.findall(matchers or ""):
                if lab not in labels:
                    out.append(f"{where}: {name} has no label {lab!r} (it has {sorted(labels)})")
        for lab in (x.strip() for grp in BY_RE.findall(expr) for x in grp.split(",") if x.strip()):
            if common is not None and lab not in common:
                out.append(f"{where}: groups by {lab!r}, which the metric does not carry")
        for name, _m, lab in LABEL_VALUES_RE.findall(expr):
            if name in have and lab not in have[name]:
                out.append(f"{where}: label_values of {lab!r}, which {name} does not carry")
        by = {x.strip() for grp in BY_RE.findall(expr) for x in grp.split(",") if x.strip()}
        for lab in LEGEND_RE.findall(legend):
            if lab not in (by or common or set()):
                out.append(f"{where}: legend uses {{{{{lab}}}}}, which the result does not carry")
    return out


def test_every_queried_metric_and_label_is_exported():
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    have = exported()
    assert problems(dash, have) == []
    # the fleet view the issue asks for: per-host, per-GPU power, energy rate, utilisation, request rate
    exprs = " ".join(e for _, e, _ in queries(dash))
    for needed in ("genai_gpu_power_watts", "rate(genai_gpu_energy_joules_total", "genai_gpu_utilization_percent",
                   "rate(genai_requests_total"):
        assert needed in exprs, needed
    assert {"host", "uuid"} <= have["genai_gpu_power_watts"] and {"host", "model", "status"} <= have["genai_requests_total"]


def test_checker_catches_a_renamed_metric_or_label():
    """Negative control: the same check on a doctored copy reports the wrong metric, label and legend."""
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    t = dash["panels"][0]["targets"][0]
    t["expr"] = t["expr"].replace("genai_gpu_power_watts", "genai_gpu_power_watt")
    t2 = dash["panels"][1]["targets"][0]
    t2["expr"] = t2["expr"].replace("host=~", "hostname=~")
    t2["legendFormat"] = "{{gpu_uuid}}"
    found = problems(dash, exported())
    assert any("genai_gpu_power_watt is not exported" in p for p in found), found
    assert any("no label 'hostname'" in p for p in found), found
    assert any("{{gpu_uuid}}" in p for p in found), found


def test_dashboard_is_importable_and_provisioned():
    """Grafana's import needs a uid, a title, unique panel ids with a grid position and a data source it can
    resolve (the dashboard's own `datasource` variable); the provisioning file loads it from files."""
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) >= 8
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "host", "gpu"} <= names
    for p in dash["panels"]:
        assert set(p["gridPos"]) == {"h", "w", "x", "y"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
    text = PROVISIONING.read_text(encoding="utf-8")
    assert "apiVersion: 1" in text and "type: file" in text and re.search(r"^\s+path: \S+", text, re.M)
