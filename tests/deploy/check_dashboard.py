#!/usr/bin/python3
"""Checks the moe-serve Grafana dashboard against docs/METRICS.md and the Prometheus rules.

    check_dashboard.py [[--dashboard] FILE] [--metrics-doc FILE] [--rules FILE]
                       [--promtool PATH] [--metrics-text FILE] [--allow-absent NAME=REASON]
    check_dashboard.py --self-test [--promtool PATH]

What is checked (every failure is listed, then the exit status is 1):
  * the dashboard is valid JSON, with a `datasource` variable (type datasource, query
    prometheus) and the `model` and `layer` query variables;
  * no panel, target or variable names a data source other than through that variable (no
    hard-coded uid); only Grafana's built-in annotation source is exempt;
  * panel ids are unique (rows and panels nested in collapsed rows included); every data panel
    has targets, every target an expr;
  * every metric name in a query (`moe_...`) is documented in a table of docs/METRICS.md
    (histograms only with _bucket, _sum or _count), and every `moe:...` name is a recording
    rule of the rules file; the rules' own expressions use documented metrics only;
  * histogram_quantile() is taken over _bucket series aggregated with `le` kept;
  * every documented metric family is shown (directly or through a recording rule), and the
    required panels exist: the expert load-share heatmap repeated by layer, the latency
    percentiles, queue against capacity, batch fill, expert run time, the slowest-experts
    table, the model info table, ...;
  * with --promtool: every query parses as PromQL (Grafana's variables replaced by sample
    values), checked by `promtool check rules` on a generated rules file;
  * with --metrics-text: every metric family the dashboard reads is present in that Prometheus
    exposition text (a /metrics scrape), except the families of ALLOWED_ABSENT (and
    --allow-absent), which exist only under conditions.

--self-test runs the checks on broken copies of the dashboard (in a temporary directory) and
fails unless each breakage is caught, and on a synthetic exposition text.

Standard library only: run it with Debian's /usr/bin/python3.
"""

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DASHBOARD = os.path.join(REPO, "deploy", "grafana", "moe-serve-dashboard.json")
DEFAULT_DOC = os.path.join(REPO, "docs", "METRICS.md")
DEFAULT_RULES = os.path.join(REPO, "deploy", "prometheus", "moe-serve-rules.yaml")

DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
DATASOURCE_VARIABLE_UIDS = ("${datasource}", "$datasource")

# Families a healthy server may legitimately leave out of a scrape.
ALLOWED_ABSENT = {
    "moe_layer_load_imbalance": "window gauge: absent while the metrics window holds no token",
    "moe_layer_routing_entropy_nats": "window gauge: absent while the metrics window holds no token",
    "moe_layer_idle_experts": "window gauge: absent while the metrics window holds no token",
    "moe_expert_load_share": "window gauge: absent while the metrics window holds no token",
}

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_TOKEN = re.compile(r"(?<![A-Za-z0-9_:])(moe_[a-z0-9_]+)")
RULE_TOKEN = re.compile(r"(?<![A-Za-z0-9_:])(moe:[A-Za-z0-9_:]+)")
DATA_PANEL_TYPES = {"timeseries", "heatmap", "stat", "gauge", "table", "bargauge", "barchart",
                    "piechart", "histogram", "state-timeline", "status-history", "graph"}
REQUIRED_ROWS = ("Traffic", "Latency", "Queue & batching", "Experts", "Expert latency", "Device")


# ------------------------------------------------------------------------------ inputs

def parse_metrics_doc(path):
    """{name: type} from the rows of the tables of METRICS.md whose first cell is `moe_...`."""
    metrics = {}
    row = re.compile(r"^\|\s*`(moe_[a-z0-9_]+)`\s*\|\s*([a-z]+)")
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = row.match(line)
            if m:
                metrics[m.group(1)] = m.group(2)
    return metrics


def parse_rules(path):
    """[(kind, name, expr)] of a Prometheus rules file, kind 'record' or 'alert'.

    A small reader for the layout promtool and this repository use: each rule is a list item
    that starts with `- record: NAME` or `- alert: NAME` and has an `expr:` key, its value on
    the same line or as a block scalar (| or >) indented below it.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = re.compile(r"^(\s*)-\s+(record|alert):\s*(\S+)\s*$")
    group = re.compile(r"^\s*-\s+name:")
    expr_key = re.compile(r"^(\s*)expr:\s*(.*)$")
    rules = []
    i = 0
    current = None
    while i < len(lines):
        line = lines[i]
        m = start.match(line)
        if m:
            current = [m.group(2), m.group(3).strip("'\""), None]
            rules.append(current)
            i += 1
            continue
        if group.match(line):
            current = None
        m = expr_key.match(line)
        if m and current is not None:
            indent = len(m.group(1))
            value = m.group(2).strip()
            if value[:1] in ("|", ">"):
                body = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or
                                          len(lines[i]) - len(lines[i].lstrip()) > indent):
                    body.append(lines[i].strip())
                    i += 1
                current[2] = " ".join(b for b in body if b)
                continue
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            current[2] = value
        i += 1
    return [tuple(r) for r in rules]


def parse_exposition(path):
    """Metric names that have at least one sample in a Prometheus text exposition."""
    names = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)", line)
            if m:
                names.add(m.group(1))
    return names


# ------------------------------------------------------------------------------ dashboard walk

def all_panels(dashboard):
    """Every panel, rows and panels nested in (collapsed) rows included, in order."""
    out = []
    for p in dashboard.get("panels", []) or []:
        out.append(p)
        for q in p.get("panels", []) or []:
            out.append(q)
    return out


def panel_name(p):
    return f"panel {p.get('id')!r} ({p.get('type')}, {p.get('title')!r})"


def variables(dashboard):
    return (dashboard.get("templating") or {}).get("list") or []


def variable_query(v):
    q = v.get("query")
    if isinstance(q, dict):
        q = q.get("query")
    return q if isinstance(q, str) else ""


def find_datasource_refs(node, where):
    """(where, value) of every `datasource` key below node."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource":
                found.append((where, v))
            found.extend(find_datasource_refs(v, f"{where}.{k}"))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found.extend(find_datasource_refs(v, f"{where}[{i}]"))
    return found


def is_variable_ref(ds):
    return isinstance(ds, dict) and ds.get("uid") in DATASOURCE_VARIABLE_UIDS and \
        ds.get("type") in (None, "prometheus")


def family_of(token, doc):
    """The documented family a metric token reads, or None; and whether the suffix is right."""
    if token in doc:
        return token, doc[token] != "histogram"
    for suffix in HISTOGRAM_SUFFIXES:
        if token.endswith(suffix):
            base = token[: -len(suffix)]
            if doc.get(base) == "histogram":
                return base, True
    return None, False


# ------------------------------------------------------------------------------ checks

def check(dashboard_path, doc_path, rules_path, promtool=None, metrics_text=None,
          allow_absent=None):
    """Returns the list of problems found (empty when all is well)."""
    errors = []
    try:
        with open(dashboard_path, encoding="utf-8") as f:
            dashboard = json.load(f)
    except (OSError, ValueError) as e:
        return [f"{dashboard_path}: not valid JSON: {e}"]
    if not isinstance(dashboard, dict):
        return [f"{dashboard_path}: not a dashboard (a JSON object)"]
    try:
        doc = parse_metrics_doc(doc_path)
    except OSError as e:
        return [f"{doc_path}: {e}"]
    if not doc:
        return [f"{doc_path}: no `moe_...` metric found in its tables"]
    try:
        rules = parse_rules(rules_path)
    except OSError as e:
        return [f"{rules_path}: {e}"]
    records = {name: expr for kind, name, expr in rules if kind == "record"}

    # --- the rules file itself reads documented metrics only
    for kind, name, expr in rules:
        if not expr:
            errors.append(f"{rules_path}: {kind} {name}: no expr found")
            continue
        for token in METRIC_TOKEN.findall(expr):
            family, ok = family_of(token, doc)
            if family is None:
                errors.append(f"{rules_path}: {kind} {name}: metric {token} is not documented "
                              f"in {os.path.basename(doc_path)}")
            elif not ok:
                errors.append(f"{rules_path}: {kind} {name}: histogram {token} used without "
                              f"_bucket/_sum/_count")
        for token in RULE_TOKEN.findall(expr):
            if token not in records:
                errors.append(f"{rules_path}: {kind} {name}: {token} is not a recording rule")

    # --- dashboard basics
    for key in ("title", "uid", "schemaVersion", "panels", "templating"):
        if key not in dashboard:
            errors.append(f"dashboard has no {key!r}")
    if isinstance(dashboard.get("schemaVersion"), int) and dashboard["schemaVersion"] < 36:
        errors.append(f"schemaVersion {dashboard['schemaVersion']} is older than Grafana 9/10 "
                      f"dashboards (36+)")

    # --- variables
    vars_by_name = {v.get("name"): v for v in variables(dashboard)}
    ds_var = vars_by_name.get("datasource")
    if not ds_var or ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
        errors.append("no datasource variable: templating needs "
                      "{name: datasource, type: datasource, query: prometheus}")
    for name, query_re in (("model", r"^label_values\(\s*moe_model_info\s*,\s*model\s*\)$"),
                           ("layer", r"^label_values\(\s*moe_layer_tokens_total\{[^}]*model=~\"\$model\"[^}]*\}\s*,\s*layer\s*\)$")):
        v = vars_by_name.get(name)
        if not v:
            errors.append(f"no {name!r} variable")
            continue
        if v.get("type") != "query" or not re.match(query_re, variable_query(v).strip()):
            errors.append(f"variable {name!r}: expected a query variable matching {query_re}, "
                          f"got {variable_query(v)!r}")
        if not v.get("multi") or not v.get("includeAll"):
            errors.append(f"variable {name!r}: must allow several values and All "
                          f"(multi, includeAll)")

    # --- data sources: only through the variable
    def describe(where):
        m = re.match(r"dashboard\.panels\[(\d+)\](?:\.panels\[(\d+)\])?", where)
        if not m:
            return where
        try:
            p = dashboard["panels"][int(m.group(1))]
            if m.group(2) is not None:
                p = p["panels"][int(m.group(2))]
            return f"{panel_name(p)}: {where}"
        except (KeyError, IndexError, TypeError):
            return where

    for where, ds in find_datasource_refs(dashboard, "dashboard"):
        if isinstance(ds, dict) and ds.get("type") == "grafana" and ".annotations." in where:
            continue  # Grafana's built-in annotations
        if ds is None:
            continue  # unset: the panel's data source applies (checked on the panel)
        if not is_variable_ref(ds):
            errors.append(f"{describe(where)}: hard-coded datasource {json.dumps(ds)}: use "
                          f"{json.dumps(DATASOURCE_REF)}")

    # --- panels
    panels = all_panels(dashboard)
    seen_ids = {}
    for p in panels:
        pid = p.get("id")
        if not isinstance(pid, int):
            errors.append(f"{panel_name(p)}: no integer id")
        elif pid in seen_ids:
            errors.append(f"duplicate panel id {pid}: {panel_name(seen_ids[pid])} and "
                          f"{panel_name(p)}")
        else:
            seen_ids[pid] = p
        if "gridPos" not in p:
            errors.append(f"{panel_name(p)}: no gridPos")
        if p.get("type") == "row":
            continue
        if p.get("type") in DATA_PANEL_TYPES:
            if not is_variable_ref(p.get("datasource")):
                errors.append(f"{panel_name(p)}: datasource must be {json.dumps(DATASOURCE_REF)}")
            targets = p.get("targets") or []
            if not targets:
                errors.append(f"{panel_name(p)}: no targets")
            refids = set()
            for t in targets:
                expr = t.get("expr")
                if not isinstance(expr, str) or not expr.strip():
                    errors.append(f"{panel_name(p)}: target {t.get('refId')!r} has no expr")
                if t.get("refId") in refids:
                    errors.append(f"{panel_name(p)}: refId {t.get('refId')!r} used twice")
                refids.add(t.get("refId"))

    queries = []  # (where, expr, panel or None)
    for p in panels:
        for t in p.get("targets") or []:
            if isinstance(t.get("expr"), str) and t["expr"].strip():
                queries.append((f"{panel_name(p)} target {t.get('refId')!r}", t["expr"], p))
    for v in variables(dashboard):
        if v.get("type") == "query":
            queries.append((f"variable {v.get('name')!r}", variable_query(v), None))

    # --- metric names
    used_families = set()
    used_records = set()
    for where, expr, _ in queries:
        for token in METRIC_TOKEN.findall(expr):
            family, ok = family_of(token, doc)
            if family is None:
                errors.append(f"{where}: metric {token} is not documented in "
                              f"{os.path.basename(doc_path)}")
            elif not ok:
                errors.append(f"{where}: histogram {token} used without _bucket/_sum/_count")
            else:
                used_families.add(family)
        for token in RULE_TOKEN.findall(expr):
            if token not in records:
                errors.append(f"{where}: {token} is not a recording rule of "
                              f"{os.path.basename(rules_path)}")
            else:
                used_records.add(token)
        if "histogram_quantile" in expr:
            if "_bucket" not in expr:
                errors.append(f"{where}: histogram_quantile over something else than _bucket")
            bys = re.findall(r"\bby\s*\(([^)]*)\)", expr)
            if not any("le" in [x.strip() for x in b.split(",")] for b in bys):
                errors.append(f"{where}: histogram_quantile without `by (..., le)`")

    # Families read through recording rules (transitively).
    def expand(record, seen):
        if record in seen:
            return
        seen.add(record)
        expr = records.get(record, "")
        for token in METRIC_TOKEN.findall(expr):
            family, ok = family_of(token, doc)
            if family and ok:
                used_families.add(family)
        for token in RULE_TOKEN.findall(expr):
            if token in records:
                expand(token, seen)
    seen_records = set()
    for r in sorted(used_records):
        expand(r, seen_records)

    missing = sorted(set(doc) - used_families)
    for family in missing:
        errors.append(f"documented metric {family} is not shown on the dashboard "
                      f"(no query reads it, directly or through a recording rule)")

    # --- required structure
    row_titles = [p.get("title", "") for p in panels if p.get("type") == "row"]
    for title in REQUIRED_ROWS:
        if not any(title.lower() == t.lower() for t in row_titles):
            errors.append(f"no row {title!r} (rows: {row_titles})")

    def exprs_of(p):
        return [t.get("expr", "") for t in p.get("targets") or [] if isinstance(t.get("expr"), str)]

    def require(description, predicate):
        if not any(predicate(p) for p in panels if p.get("type") != "row"):
            errors.append(f"required panel missing: {description}")

    heatmaps = [p for p in panels if p.get("type") == "heatmap" and
                any("moe_expert_load_share" in e for e in exprs_of(p))]
    if not heatmaps:
        errors.append("required panel missing: heatmap of moe_expert_load_share")
    for p in heatmaps:
        if p.get("repeat") != "layer":
            errors.append(f"{panel_name(p)}: the expert load-share heatmap must repeat by layer "
                          f"(\"repeat\": \"layer\")")
        if (p.get("options") or {}).get("calculate") is not False:
            errors.append(f"{panel_name(p)}: the expert load-share heatmap must not calculate "
                          f"buckets (options.calculate false): the series are the rows")
        for t in p.get("targets") or []:
            if "$layer" not in t.get("expr", "") and "${layer}" not in t.get("expr", ""):
                errors.append(f"{panel_name(p)}: target {t.get('refId')!r} does not select "
                              f"layer $layer")
            if t.get("legendFormat") != "{{expert}}":
                errors.append(f"{panel_name(p)}: target {t.get('refId')!r}: legendFormat must "
                              f"be {{{{expert}}}} (y axis = expert)")
            if t.get("format", "time_series") not in ("time_series", "heatmap"):
                errors.append(f"{panel_name(p)}: target {t.get('refId')!r}: format must be "
                              f"time_series or heatmap")

    def any_expr(pattern):
        rx = re.compile(pattern)
        return lambda p: any(rx.search(e) for e in exprs_of(p))

    def quantile(q, metric, record=None):
        pat = rf"histogram_quantile\(\s*0?{re.escape(q)}0*\s*,.*\b{metric}_bucket\b"
        if record:
            pat = rf"(?:{pat})|(?:{re.escape(record)}\b)"
        return any_expr(pat)

    require("request rate by outcome",
            any_expr(r"\bby\s*\([^)]*\boutcome\b[^)]*\)\s*\(\s*rate\(\s*moe_requests_total\b"))
    require("error ratio", any_expr(r"moe:request_error_ratio:rate5m|outcome=\"internal\""))
    for q in ("0.5", "0.9", "0.99"):
        rec = f"moe:request_duration_seconds:p{round(float(q) * 100)}_5m"
        require(f"p{round(float(q) * 100)} of moe_request_duration_seconds",
                quantile(q, "moe_request_duration_seconds", rec))
    require("queue wait percentiles", quantile("0.99", "moe_request_queue_duration_seconds",
                                               "moe:request_queue_duration_seconds:p99_5m"))
    require("compute time percentiles", quantile("0.99", "moe_request_compute_duration_seconds",
                                                 "moe:request_compute_duration_seconds:p99_5m"))
    require("queued requests against the queue capacity (one panel)",
            lambda p: any_expr(r"\bmoe_requests_queued\b")(p) and
            any_expr(r"\bmoe_queue_capacity_requests\b")(p))
    require("running requests", any_expr(r"\bmoe_requests_running\b"))
    require("batch rows p50 and p99", lambda p: quantile("0.5", "moe_batch_rows")(p) and
            quantile("0.99", "moe_batch_rows")(p))
    require("mean batch rows = rate(_sum) / rate(_count)",
            any_expr(r"moe_batch_rows_sum\b.*/.*moe_batch_rows_count\b|moe:batch_rows:mean_5m"))
    require("batch fill against moe_batch_capacity_rows",
            any_expr(r"moe_batch_rows.*/.*moe_batch_capacity_rows|moe:batch_fill_ratio:mean_5m"))
    require("batches/s", any_expr(r"rate\(\s*moe_batches_total\b|moe:batches:rate5m"))
    require("batch duration", quantile("0.99", "moe_batch_duration_seconds",
                                       "moe:batch_duration_seconds:p99_5m"))
    require("tokens/s per expert",
            any_expr(r"\bby\s*\([^)]*\bexpert\b[^)]*\)\s*\(\s*rate\(\s*moe_expert_tokens_total\b"))
    require("load imbalance per layer", any_expr(r"\bmoe_layer_load_imbalance\b"))
    require("routing entropy per layer", any_expr(r"\bmoe_layer_routing_entropy_nats\b"))
    require("idle experts per layer", any_expr(r"\bmoe_layer_idle_experts\b"))
    require("mean time per expert run = rate(seconds) / rate(samples)",
            any_expr(r"rate\(\s*moe_expert_compute_seconds_total\b.*/.*"
                     r"rate\(\s*moe_expert_compute_samples_total\b"))
    require("table of the slowest experts (topk)",
            lambda p: p.get("type") == "table" and
            any_expr(r"\btopk\s*\(.*moe_expert_compute_seconds_total\b")(p))
    require("layer duration p99 per layer",
            any_expr(r"moe:layer_duration_seconds:p99_5m|histogram_quantile\(\s*0?\.99\s*,.*"
                     r"\bby\s*\([^)]*\blayer\b[^)]*\).*moe_layer_duration_seconds_bucket"))
    require("device memory used / total",
            any_expr(r"moe_device_memory_used_bytes\b.*/.*moe_device_memory_total_bytes\b"))
    require("model weight bytes", any_expr(r"\bmoe_model_weight_bytes\b"))
    require("model load time", any_expr(r"\bmoe_model_load_duration_seconds\b"))
    require("model info table", lambda p: p.get("type") == "table" and
            any_expr(r"\bmoe_model_info\b")(p))

    # --- PromQL syntax
    if promtool:
        errors.extend(check_promql(promtool, queries))

    # --- a real scrape
    if metrics_text:
        allowed = dict(ALLOWED_ABSENT)
        allowed.update(allow_absent or {})
        try:
            present = parse_exposition(metrics_text)
        except OSError as e:
            errors.append(f"{metrics_text}: {e}")
            present = None
        if present is not None:
            for family in sorted(used_families):
                names = {family} | ({family + s for s in HISTOGRAM_SUFFIXES}
                                    if doc.get(family) == "histogram" else set())
                if names & present:
                    continue
                if family in allowed:
                    print(f"check_dashboard: note: {family} absent from {metrics_text}, "
                          f"allowed: {allowed[family]}")
                    continue
                errors.append(f"{metrics_text}: the dashboard reads {family}, which has no "
                              f"sample in this exposition")
            for name in sorted(present):
                if name.startswith("moe_") and family_of(name, doc)[0] is None:
                    print(f"check_dashboard: warning: {metrics_text} exports {name}, which "
                          f"{os.path.basename(doc_path)} does not document")
    return errors


def grafana_to_promql(expr):
    """Replaces Grafana's variables with values that keep the query valid PromQL."""
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", "5m", expr)
    expr = re.sub(r"\$__range_s\b|\$__interval_ms\b", "300", expr)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?", "0", expr)


def check_promql(promtool, queries):
    """Parses every panel query with `promtool check rules`; returns the problems."""
    items = []
    for i, (where, expr, _) in enumerate(queries):
        if where.startswith("variable "):
            m = re.match(r"\s*label_values\((.*),\s*[A-Za-z_]+\s*\)\s*$", expr)
            if not m:
                continue  # not PromQL
            expr = m.group(1)
        items.append((f"dashboard_query_{i}", where, grafana_to_promql(expr)))
    if not items:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dashboard-queries.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write("groups:\n  - name: dashboard\n    rules:\n")
            for name, _, expr in items:
                f.write(f"      - record: {name}\n        expr: {json.dumps(expr)}\n")
        try:
            proc = subprocess.run([promtool, "check", "rules", path], capture_output=True,
                                  text=True, check=False)
        except OSError as e:
            return [f"cannot run promtool {promtool!r}: {e}"]
    if proc.returncode == 0:
        return []
    out = proc.stdout + proc.stderr
    problems = []
    for name, where, expr in items:
        for line in out.splitlines():
            if re.search(rf"\b{name}\b", line):
                problems.append(f"{where}: promtool: {line.strip()}  (query as checked: {expr})")
                break
    if not problems:
        problems.append("promtool check rules failed on the dashboard's queries:\n" + out)
    return problems


# ------------------------------------------------------------------------------ self-test

def self_test(promtool):
    """Breaks copies of the dashboard one way at a time and expects the check to say so."""
    failures = []
    with open(DEFAULT_DASHBOARD, encoding="utf-8") as f:
        good = json.load(f)
    doc = parse_metrics_doc(DEFAULT_DOC)

    def first(pred):
        return next(p for p in all_panels(good_copy) if pred(p))

    cases = []

    def case(name, expect, mutate, text=None):
        cases.append((name, expect, mutate, text))

    def ds_panel(d):
        next(p for p in all_panels(d) if p.get("type") == "timeseries")["datasource"] = {
            "type": "prometheus", "uid": "P1809F7CD0C75ACF3"}

    def ds_target(d):
        next(p for p in all_panels(d) if p.get("type") == "stat")["targets"][0]["datasource"] = {
            "type": "prometheus", "uid": "abcdef"}

    def ds_var(d):
        d["templating"]["list"] = [v for v in d["templating"]["list"] if v["name"] != "datasource"]

    def dup_id(d):
        ps = [p for p in all_panels(d) if p.get("type") != "row"]
        ps[1]["id"] = ps[0]["id"]

    def no_expr(d):
        next(p for p in all_panels(d) if p.get("type") == "timeseries")["targets"][0]["expr"] = ""

    def typo_metric(d):
        t = next(p for p in all_panels(d) if p.get("type") == "timeseries")["targets"][0]
        t["expr"] = t["expr"].replace("moe_requests_total", "moe_request_total")

    def bad_record(d):
        t = next(p for p in all_panels(d) if p.get("type") == "stat")["targets"][0]
        t["expr"] = "max(moe:request_error_ratio:rate1m)"

    def bare_histogram(d):
        t = next(p for p in all_panels(d) if p.get("type") == "timeseries")["targets"][0]
        t["expr"] = "sum(rate(moe_batch_duration_seconds[5m]))"

    def no_repeat(d):
        for p in all_panels(d):
            if p.get("type") == "heatmap" and p.get("repeat"):
                del p["repeat"]

    def no_le(d):
        for p in all_panels(d):
            for t in p.get("targets") or []:
                if "histogram_quantile" in t.get("expr", ""):
                    t["expr"] = t["expr"].replace("by (model, le)", "by (model)")
                    return

    def drop_family(d):
        for p in all_panels(d):
            p["targets"] = [t for t in p.get("targets") or []
                            if "moe_model_weight_bytes" not in t.get("expr", "")]
        d["panels"] = [p for p in d["panels"] if p.get("type") == "row" or p.get("targets")]

    def syntax(d):
        t = next(p for p in all_panels(d) if p.get("type") == "timeseries")["targets"][0]
        t["expr"] = t["expr"].replace("sum by (model, outcome) (", "sum by (model, outcome) ((")

    case("hard-coded panel datasource", "hard-coded datasource", ds_panel)
    case("hard-coded target datasource", "hard-coded datasource", ds_target)
    case("no datasource variable", "no datasource variable", ds_var)
    case("duplicate panel id", "duplicate panel id", dup_id)
    case("empty expr", "has no expr", no_expr)
    case("undocumented metric", "moe_request_total is not documented", typo_metric)
    case("unknown recording rule", "is not a recording rule", bad_record)
    case("histogram without suffix", "used without _bucket/_sum/_count", bare_histogram)
    case("heatmap not repeated", "must repeat by layer", no_repeat)
    case("histogram_quantile without le", "without `by (..., le)`", no_le)
    case("documented metric not shown", "moe_model_weight_bytes is not shown", drop_family)
    if promtool:
        case("PromQL syntax error", "promtool", syntax)
    case("invalid JSON", "not valid JSON", None, text="{\"panels\": [")

    with tempfile.TemporaryDirectory() as tmp:
        good_path = os.path.join(tmp, "good.json")
        with open(good_path, "w", encoding="utf-8") as f:
            json.dump(good, f)
        errs = check(good_path, DEFAULT_DOC, DEFAULT_RULES, promtool=promtool)
        if errs:
            failures.append("the unmodified dashboard fails: " + "; ".join(errs))

        for name, expect, mutate, text in cases:
            path = os.path.join(tmp, "broken.json")
            if text is None:
                broken = copy.deepcopy(good)
                mutate(broken)
                text = json.dumps(broken)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            errs = check(path, DEFAULT_DOC, DEFAULT_RULES, promtool=promtool)
            if not any(expect in e for e in errs):
                failures.append(f"{name}: expected an error containing {expect!r}, got {errs}")
            else:
                print(f"self-test: {name}: caught")

        # A rules file whose rule reads an undocumented metric.
        with open(DEFAULT_RULES, encoding="utf-8") as f:
            rules_text = f.read()
        bad_rules = os.path.join(tmp, "rules.yaml")
        with open(bad_rules, "w", encoding="utf-8") as f:
            f.write(rules_text.replace("rate(moe_batches_total[5m])", "rate(moe_batch_total[5m])"))
        errs = check(good_path, DEFAULT_DOC, bad_rules)
        if not any("moe_batch_total is not documented" in e for e in errs):
            failures.append(f"rules with an undocumented metric: not caught: {errs}")
        else:
            print("self-test: rules with an undocumented metric: caught")

        # A synthetic scrape with every documented family passes; one without
        # moe_batches_total fails naming it; one without a window gauge passes (allowed).
        def exposition(skip=()):
            lines = []
            for name, kind in doc.items():
                if name in skip:
                    continue
                lines.append(f"# TYPE {name} {kind.replace('(1)', '').strip()}")
                if kind == "histogram":
                    lines.append(f'{name}_bucket{{model="m",le="+Inf"}} 1')
                    lines.append(f'{name}_sum{{model="m"}} 1')
                    lines.append(f'{name}_count{{model="m"}} 1')
                else:
                    lines.append(f'{name}{{model="m"}} 1')
            return "\n".join(lines) + "\n"

        for name, skip, expect in (
                ("scrape with every family", (), None),
                ("scrape without moe_batches_total", ("moe_batches_total",),
                 "reads moe_batches_total, which has no sample"),
                ("scrape without moe_request_duration_seconds",
                 ("moe_request_duration_seconds",), "reads moe_request_duration_seconds"),
                ("scrape without the window gauges", tuple(ALLOWED_ABSENT), None)):
            text_path = os.path.join(tmp, "metrics.txt")
            with open(text_path, "w", encoding="utf-8") as f:
                f.write(exposition(skip))
            errs = check(good_path, DEFAULT_DOC, DEFAULT_RULES, metrics_text=text_path)
            if expect is None and errs:
                failures.append(f"{name}: expected no error, got {errs}")
            elif expect is not None and not any(expect in e for e in errs):
                failures.append(f"{name}: expected an error containing {expect!r}, got {errs}")
            else:
                print(f"self-test: {name}: as expected")

    if failures:
        print("check_dashboard self-test: FAILED", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print(f"check_dashboard self-test: OK ({len(cases) + 5} cases)")
    return 0


# ------------------------------------------------------------------------------ main

def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dashboard_path", nargs="?", metavar="DASHBOARD",
                    help="the dashboard JSON (same as --dashboard)")
    ap.add_argument("--dashboard", default=None)
    ap.add_argument("--metrics-doc", default=DEFAULT_DOC)
    ap.add_argument("--rules", default=DEFAULT_RULES)
    ap.add_argument("--promtool", help="parse every query with this promtool")
    ap.add_argument("--metrics-text", help="a /metrics scrape the dashboard's families must be in")
    ap.add_argument("--allow-absent", action="append", default=[], metavar="NAME=REASON",
                    help="with --metrics-text: a family that may be absent, and why")
    ap.add_argument("--self-test", action="store_true",
                    help="check that broken copies of the dashboard fail")
    args = ap.parse_args(argv)
    if args.dashboard_path and args.dashboard and args.dashboard_path != args.dashboard:
        ap.error("give the dashboard once, positionally or with --dashboard")
    args.dashboard = args.dashboard_path or args.dashboard or DEFAULT_DASHBOARD
    if args.self_test:
        return self_test(args.promtool)
    allow = {}
    for item in args.allow_absent:
        name, sep, reason = item.partition("=")
        if not sep or not reason.strip():
            ap.error(f"--allow-absent {item!r}: give NAME=REASON")
        allow[name] = reason
    errors = check(args.dashboard, args.metrics_doc, args.rules, promtool=args.promtool,
                   metrics_text=args.metrics_text, allow_absent=allow)
    if errors:
        print(f"check_dashboard: {args.dashboard}: {len(errors)} problem(s):", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    with open(args.dashboard, encoding="utf-8") as f:
        n = len(all_panels(json.load(f)))
    print(f"check_dashboard: {args.dashboard}: OK ({n} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
