#!/usr/bin/env python3
"""Validates the Kubernetes manifests of deploy/ offline.

    validate_manifests.py --kubectl PATH [--k8s-version V ...] [--metrics-text FILE]
    validate_manifests.py --self-test --kubectl PATH
    validate_manifests.py --adapter-metrics-only --metrics-text FILE

What is checked (every failure is listed, then the exit status is 1):
  * `kubectl kustomize` builds deploy/k8s/gpu, deploy/k8s/cpu and deploy/k8s/prometheus-adapter;
  * every object they render, and deploy/kserve/serving-runtime.yaml, validates against its
    schema: built-in kinds against the Kubernetes OpenAPI schemas that the kubernetes-validate
    package ships (strict: unknown fields are errors, as with `kubectl apply`'s field
    validation), for each --k8s-version; custom resources (ServiceMonitor, ServingRuntime)
    against the CRD schemas in deploy/schemas/ (objects closed the same way); a kind with no
    schema is an error;
  * what the schemas cannot say, from how moe-server behaves (docs/OPERATIONS.md):
    - the server container runs as non-root with a read-only root filesystem, no privilege
      escalation, every capability dropped and the RuntimeDefault seccomp profile, with /tmp
      on an emptyDir;
    - startup, readiness and liveness probes are gRPC health checks on the port moe-server
      listens on (its --address), which is the container port named grpc (h2c for KServe);
    - terminationGracePeriodSeconds is longer than --drain-timeout, wherever it is set (args
      or the flag files mounted from the generated ConfigMap);
    - flag files hold only `--flag_name=value` lines that absl's --flagfile takes (underscores,
      not dashes), and no --model (moe-server reads --model from the command line only);
    - Service, PodDisruptionBudget, NetworkPolicy and ServiceMonitor select the Deployment's
      pods and name ports that exist; the HorizontalPodAutoscaler targets the Deployment;
    - every Pods metric of the autoscaler is served by a prometheus-adapter rule, and every
      moe_ metric those rules read is documented in docs/METRICS.md (with --metrics-text:
      present in that /metrics scrape).

--self-test breaks copies of the rendered objects (and of the kustomization) one way at a time
and fails unless each breakage is caught. --adapter-metrics-only checks just the adapter rules
against a scrape (the live-server test uses it). Needs PyYAML, jsonschema and
kubernetes-validate: run it with the project's .venv (scripts/setup_python.sh).
"""

import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEPLOY = os.path.join(REPO, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
OVERLAYS = ("gpu", "cpu")
ADAPTER_DIR = "prometheus-adapter"
KSERVE_FILE = os.path.join(DEPLOY, "kserve", "serving-runtime.yaml")
SCHEMAS = os.path.join(DEPLOY, "schemas")
METRICS_DOC = os.path.join(REPO, "docs", "METRICS.md")
# gRPC probes went GA in Kubernetes 1.27 (beta and on by default since 1.24); the newest
# version is whatever the installed kubernetes-validate ships (added in main()).
DEFAULT_K8S_VERSIONS = ("1.27",)
# moe-server's default --drain-timeout (docs/OPERATIONS.md), used where no flag sets it.
DEFAULT_DRAIN_SECONDS = 30.0
# Kubernetes' default terminationGracePeriodSeconds, for pods whose spec we do not write
# (KServe's ServingRuntime has no field for it).
DEFAULT_GRACE_SECONDS = 30
K8S_DEFS_URI = "https://kubernetes.io/api/_definitions.json"

sys.path.insert(0, HERE)
import check_dashboard  # noqa: E402  (METRICS.md parsing, shared with the dashboard check)

try:
    import jsonschema
    import kubernetes_validate
    import kubernetes_validate.utils as kv_utils
    from referencing import Registry, Resource
except ImportError as error:
    sys.stderr.write(f"validate_manifests.py: missing Python module ({error}): run it with the "
                     f".venv that scripts/setup_python.sh makes\n")
    sys.exit(1)


# ------------------------------------------------------------------------------ loading

def kustomize(kubectl, directory):
    """The objects `kubectl kustomize DIRECTORY` renders; raises RuntimeError on failure."""
    proc = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed: {proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def load_yaml_file(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name_of(obj):
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


# ------------------------------------------------------------------------------ schemas

def k8s_schema_dir(version):
    """The strict schema folder kubernetes-validate uses for a Kubernetes version."""
    versions = [v for v in kv_utils.all_versions()
                if kv_utils.major_minor(v) <= kv_utils.major_minor(version)]
    if not versions:
        raise RuntimeError(f"kubernetes-validate {kubernetes_validate.__version__} has no schemas "
                           f"for Kubernetes {version}")
    return f"v{versions[-1]}-local-strict"


def close_objects(schema):
    """A CRD's structural schema as JSON Schema with unknown fields refused.

    The API server prunes (drops) fields a CRD's schema does not declare, and `kubectl apply`
    reports them as unknown fields: a misspelt field would be silently lost. Closing every object
    that declares properties (and neither additionalProperties nor
    x-kubernetes-preserve-unknown-fields) makes such a field an error here.
    """
    if isinstance(schema, list):
        return [close_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: close_objects(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


class CrdSchemas:
    """The CRD schemas of deploy/schemas, by (apiVersion, kind), as JSON Schema validators."""

    def __init__(self, schema_dir, k8s_version):
        defs = kv_utils.schema_contents(
            f"kubernetes-json-schema/{k8s_schema_dir(k8s_version)}/_definitions.json",
            k8s_version)
        registry = Resource.from_contents(defs) @ Registry()
        self.validators = {}
        for entry in sorted(os.listdir(schema_dir)):
            if not entry.endswith(".yaml"):
                continue
            for crd in load_yaml_file(os.path.join(schema_dir, entry)):
                if crd.get("kind") != "CustomResourceDefinition":
                    continue
                group = crd["spec"]["group"]
                kind = crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    schema = close_objects(version["schema"]["openAPIV3Schema"])
                    # metadata is an ObjectMeta like any object's (the CRD leaves it to the API
                    # server): check it against Kubernetes' own definition.
                    schema["properties"]["metadata"] = {
                        "$ref": f"{K8S_DEFS_URI}#/$defs/"
                                "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
                    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
                    self.validators[(f"{group}/{version['name']}", kind)] = (
                        jsonschema.Draft202012Validator(schema, registry=registry), entry)

    def get(self, obj):
        return self.validators.get((obj.get("apiVersion"), obj.get("kind")))


def schema_errors(obj, where, crds_by_version, k8s_versions):
    errors = []
    for version in k8s_versions:
        crd = crds_by_version[version].get(obj)
        if crd is not None:
            validator, source = crd
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
                path = ".".join(str(p) for p in e.absolute_path) or "(top level)"
                errors.append(f"{where}: {name_of(obj)}: {path}: {e.message} "
                              f"(CRD schema {source})")
            if errors:
                break  # the CRD schemas do not depend on the Kubernetes version
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top level)"
            errors.append(f"{where}: {name_of(obj)}: {path}: {e.message} "
                          f"(Kubernetes {e.version} schema)")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{where}: {name_of(obj)}: no schema for {obj.get('apiVersion')} "
                          f"{obj.get('kind')} in Kubernetes {version} nor in deploy/schemas")
    return errors


# ------------------------------------------------------------------------------ moe-server rules

DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(h|ms|m|s|us|ns))+$")


def duration_seconds(text):
    """absl duration text (30s, 1m30s, 500ms) in seconds; None if it does not parse."""
    if not DURATION.match(text):
        return None
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    return sum(float(n) * scale[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)",
                                                          text))


def flag_pairs(args):
    """[(name with underscores, value)] of `--name=value` / `--name value` args."""
    pairs = []
    i = 0
    while i < len(args):
        arg = args[i]
        m = re.match(r"^--?([A-Za-z0-9_-]+)(?:=(.*))?$", arg)
        if m:
            value = m.group(2)
            if value is None and i + 1 < len(args) and not args[i + 1].startswith("-"):
                value = args[i + 1]
                i += 1
            pairs.append((m.group(1).replace("-", "_"), value))
        i += 1
    return pairs


def check_flag_file(text, where):
    """Problems with a flag file for absl's --flagfile; and its [(name, value)]."""
    errors = []
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = re.match(r"^--([a-z0-9_]+)=(.*)$", stripped)
        if not m:
            errors.append(f"{where}:{n}: {stripped!r} is not `--flag_name=value` (absl's "
                          f"--flagfile takes names with underscores only)")
            continue
        name, value = m.group(1), m.group(2)
        if name == "model":
            errors.append(f"{where}:{n}: --model in a flag file is ignored (moe-server reads "
                          f"--model from the command line only): put it in the container args")
        if name == "flagfile":
            errors.append(f"{where}:{n}: nested --flagfile")
        pairs.append((name, value))
    return errors, pairs


def pod_templates(obj):
    """(pod spec, where) of the pods an object runs."""
    kind = obj.get("kind")
    if kind == "Deployment":
        return [((obj.get("spec") or {}).get("template") or {}).get("spec") or {}]
    if kind == "ServingRuntime":
        return [obj.get("spec") or {}]
    return []


def container_port(container, name):
    for p in container.get("ports") or []:
        if p.get("name") == name:
            return p.get("containerPort")
    return None


def check_server_pod(obj, where, configmaps):
    """The moe-server rules of docs/OPERATIONS.md on a Deployment or ServingRuntime."""
    errors = []
    what = f"{where}: {name_of(obj)}"
    for spec in pod_templates(obj):
        pod_sc = spec.get("securityContext") or {}
        volumes = {v.get("name"): v for v in spec.get("volumes") or []}
        for c in spec.get("containers") or []:
            cw = f"{what}: container {c.get('name')}"
            sc = c.get("securityContext") or {}
            if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                errors.append(f"{cw}: runAsNonRoot is not true")
            if sc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{cw}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{cw}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                errors.append(f"{cw}: capabilities.drop does not contain ALL")
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                errors.append(f"{cw}: seccompProfile is {seccomp!r}, not RuntimeDefault")
            tmp = [m for m in c.get("volumeMounts") or [] if m.get("mountPath") == "/tmp"]
            if not tmp or "emptyDir" not in (volumes.get(tmp[0].get("name")) or {}):
                errors.append(f"{cw}: /tmp is not an emptyDir (the root filesystem is read-only)")

            # Flags: the args, then the flag files they name (absl reads them in order; a later
            # flag wins).
            flags = []
            for name, value in flag_pairs(c.get("args") or []):
                if name != "flagfile":
                    flags.append((name, value))
                    continue
                for path in (value or "").split(","):
                    text = flag_file_text(path, c, volumes, configmaps)
                    if text is None:
                        errors.append(f"{cw}: --flagfile {path} is not a file of a mounted "
                                      f"ConfigMap of this build")
                        continue
                    file_errors, pairs = check_flag_file(text, f"{cw}: {path}")
                    errors.extend(file_errors)
                    flags.extend(pairs)
            values = dict(flags)

            # Probes: gRPC health on the port the server listens on.
            grpc_name = "h2c" if obj.get("kind") == "ServingRuntime" else "grpc"
            port = container_port(c, grpc_name)
            address = values.get("address") or "0.0.0.0:8001"
            listen = int(address.rsplit(":", 1)[1]) if re.match(r".*:\d+$", address) else None
            if port is None:
                errors.append(f"{cw}: no container port named {grpc_name}")
            elif listen != port:
                errors.append(f"{cw}: --address {address} is not the {grpc_name} port {port}")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = c.get(probe)
                if not p:
                    errors.append(f"{cw}: no {probe}")
                elif "grpc" not in p:
                    errors.append(f"{cw}: {probe} is not a gRPC health probe "
                                  f"(grpc.health.v1 is what reports models loaded)")
                elif p["grpc"].get("port") != port:
                    errors.append(f"{cw}: {probe} checks port {p['grpc'].get('port')}, "
                                  f"moe-server's gRPC port is {port}")
                elif p["grpc"].get("service", "") != "":
                    errors.append(f"{cw}: {probe} asks service {p['grpc']['service']!r}: "
                                  f"\"\" covers every model")

            # Draining must end before the kubelet's SIGKILL.
            drain_text = values.get("drain_timeout")
            drain = DEFAULT_DRAIN_SECONDS if drain_text is None else duration_seconds(drain_text)
            if drain is None:
                errors.append(f"{cw}: --drain-timeout {drain_text!r} is not a duration")
                continue
            grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
            if not grace > drain:
                errors.append(f"{cw}: terminationGracePeriodSeconds {grace} is not longer than "
                              f"--drain-timeout {drain:g}s: the kubelet would kill the server "
                              f"while it drains")
    return errors


def flag_file_text(path, container, volumes, configmaps):
    """The contents of `path` from a ConfigMap volume mounted in the container, or None."""
    for m in container.get("volumeMounts") or []:
        mount = m.get("mountPath", "").rstrip("/") + "/"
        if not path.startswith(mount):
            continue
        cm_name = ((volumes.get(m.get("name")) or {}).get("configMap") or {}).get("name")
        cm = configmaps.get(cm_name)
        if cm is None:
            return None
        return (cm.get("data") or {}).get(path[len(mount):])
    return None


def selects(selector, labels):
    match = (selector or {}).get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def check_wiring(objs, where, adapter_metrics):
    """Selectors, port names and the autoscaler's metrics across one overlay's objects."""
    errors = []
    deployments = [o for o in objs if o.get("kind") == "Deployment"]
    services = [o for o in objs if o.get("kind") == "Service"]
    if len(deployments) != 1:
        return [f"{where}: expected one Deployment, found {len(deployments)}"]
    dep = deployments[0]
    pod_labels = ((dep["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selects(dep["spec"].get("selector"), pod_labels):
        errors.append(f"{where}: {name_of(dep)}: selector does not match its pod labels")
    port_names = {p.get("name") for c in dep["spec"]["template"]["spec"].get("containers") or []
                  for p in c.get("ports") or []}
    for o in objs:
        kind = o.get("kind")
        spec = o.get("spec") or {}
        if kind == "Service":
            if spec.get("selector") != pod_labels and not all(
                    pod_labels.get(k) == v for k, v in (spec.get("selector") or {}).items()):
                errors.append(f"{where}: {name_of(o)}: selector does not match the pods")
            names = {p.get("name") for p in spec.get("ports") or []}
            for needed in ("grpc", "metrics"):
                if needed not in names:
                    errors.append(f"{where}: {name_of(o)}: no port named {needed}")
            for p in spec.get("ports") or []:
                if isinstance(p.get("targetPort"), str) and p["targetPort"] not in port_names:
                    errors.append(f"{where}: {name_of(o)}: targetPort {p['targetPort']} is not a "
                                  f"container port")
        elif kind in ("PodDisruptionBudget", "ServiceMonitor"):
            target = pod_labels if kind == "PodDisruptionBudget" else (
                (services[0].get("metadata") or {}).get("labels") or {} if services else {})
            if not selects(spec.get("selector"), target):
                errors.append(f"{where}: {name_of(o)}: selector does not match the "
                              f"{'pods' if kind == 'PodDisruptionBudget' else 'Service'}")
            if kind == "ServiceMonitor":
                svc_ports = {p.get("name") for s in services
                             for p in (s.get("spec") or {}).get("ports") or []}
                for ep in spec.get("endpoints") or []:
                    if ep.get("port") not in svc_ports:
                        errors.append(f"{where}: {name_of(o)}: endpoint port {ep.get('port')!r} "
                                      f"is not a Service port")
        elif kind == "NetworkPolicy":
            if not selects(spec.get("podSelector"), pod_labels):
                errors.append(f"{where}: {name_of(o)}: podSelector does not match the pods")
            for rule in spec.get("ingress") or []:
                for p in rule.get("ports") or []:
                    if isinstance(p.get("port"), str) and p["port"] not in port_names:
                        errors.append(f"{where}: {name_of(o)}: port {p['port']} is not a "
                                      f"container port")
        elif kind == "HorizontalPodAutoscaler":
            ref = spec.get("scaleTargetRef") or {}
            if ref.get("kind") != "Deployment" or ref.get("name") != dep["metadata"]["name"]:
                errors.append(f"{where}: {name_of(o)}: scaleTargetRef is not {name_of(dep)}")
            for m in spec.get("metrics") or []:
                if m.get("type") != "Pods":
                    continue
                metric = ((m.get("pods") or {}).get("metric") or {}).get("name")
                if metric not in adapter_metrics:
                    errors.append(f"{where}: {name_of(o)}: Pods metric {metric!r} is not served "
                                  f"by a rule of deploy/k8s/{ADAPTER_DIR} (it serves "
                                  f"{sorted(adapter_metrics)})")
    return errors


def adapter_rules(objs):
    """The `rules` of the prometheus-adapter ConfigMap's config.yaml."""
    for o in objs:
        if o.get("kind") == "ConfigMap" and "config.yaml" in (o.get("data") or {}):
            return (yaml.safe_load(o["data"]["config.yaml"]) or {}).get("rules") or []
    return None


def adapter_metric_names(rules):
    """The metric names the rules serve (name.as, else the series name)."""
    names = set()
    for rule in rules:
        name = rule.get("name") or {}
        if name.get("as"):
            names.add(name["as"])
        else:
            m = check_dashboard.METRIC_TOKEN.search(rule.get("seriesQuery", ""))
            if m:
                names.add(m.group(1))
    return names


def check_adapter_rules(rules, doc, scraped=None):
    """Every moe_ metric the rules read is documented (histograms through a suffix) and, with
    a scrape, exported by the server."""
    errors = []
    if not rules:
        return [f"deploy/k8s/{ADAPTER_DIR}: no prometheus-adapter rules found"]
    for i, rule in enumerate(rules):
        for key in ("seriesQuery", "metricsQuery"):
            text = rule.get(key) or ""
            if not text:
                errors.append(f"adapter rule {i}: no {key}")
            for token in check_dashboard.METRIC_TOKEN.findall(text):
                family, ok = check_dashboard.family_of(token, doc)
                if family is None:
                    errors.append(f"adapter rule {i}: {key}: metric {token} is not documented in "
                                  f"docs/METRICS.md")
                elif not ok:
                    errors.append(f"adapter rule {i}: {key}: histogram {token} used without "
                                  f"_bucket/_sum/_count")
                if scraped is not None and token not in scraped:
                    errors.append(f"adapter rule {i}: {key}: metric {token} has no sample in the "
                                  f"server's /metrics")
    return errors


# ------------------------------------------------------------------------------ the check

def render_all(kubectl, k8s_dir=K8S):
    """{source: [objects]} of every overlay, the adapter rules and the KServe runtime."""
    rendered = {}
    errors = []
    for d in OVERLAYS + (ADAPTER_DIR,):
        try:
            rendered[f"deploy/k8s/{d}"] = kustomize(kubectl, os.path.join(k8s_dir, d))
        except RuntimeError as e:
            errors.append(str(e))
    rendered["deploy/kserve/serving-runtime.yaml"] = load_yaml_file(KSERVE_FILE)
    return rendered, errors


def check_rendered(rendered, crds_by_version, k8s_versions, doc, scraped=None):
    errors = []
    rules = adapter_rules(rendered.get(f"deploy/k8s/{ADAPTER_DIR}", []))
    errors.extend(check_adapter_rules(rules, doc, scraped))
    served = adapter_metric_names(rules or [])
    for where, objs in rendered.items():
        configmaps = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "ConfigMap"}
        for obj in objs:
            errors.extend(schema_errors(obj, where, crds_by_version, k8s_versions))
            errors.extend(check_server_pod(obj, where, configmaps))
        if any(o.get("kind") == "Deployment" for o in objs):
            errors.extend(check_wiring(objs, where, served))
    return errors


def self_test(kubectl, crds_by_version, k8s_versions, doc):
    """Breaks copies one way at a time; each must be caught with the expected message."""
    failures = []
    good, render_errors = render_all(kubectl)
    if render_errors:
        return [f"rendering the unmodified manifests failed: {render_errors}"]
    errs = check_rendered(good, crds_by_version, k8s_versions, doc)
    if errs:
        return ["the unmodified manifests fail: " + "; ".join(errs)]

    gpu = "deploy/k8s/gpu"
    kserve = "deploy/kserve/serving-runtime.yaml"
    adapter = f"deploy/k8s/{ADAPTER_DIR}"

    def find(r, where, kind):
        return next(o for o in r[where] if o.get("kind") == kind)

    def container(r, where=gpu, kind="Deployment"):
        spec = find(r, where, kind)["spec"]
        return (spec["template"]["spec"] if kind == "Deployment" else spec)["containers"][0]

    def set_flag_file(r, key, text):
        cm = find(r, gpu, "ConfigMap")
        cm["data"][key] = text

    def set_adapter_rules(r, mutate):
        cm = find(r, adapter, "ConfigMap")
        rules = yaml.safe_load(cm["data"]["config.yaml"])
        mutate(rules["rules"])
        cm["data"]["config.yaml"] = yaml.safe_dump(rules)

    cases = [
        # Kubernetes OpenAPI schema: wrong type, missing required field, unknown field.
        ("probe port as a string", "readinessProbe.grpc.port",
         lambda r: container(r)["readinessProbe"]["grpc"].update(port="8001")),
        ("Deployment without selector", "'selector' is a required property",
         lambda r: find(r, gpu, "Deployment")["spec"].pop("selector")),
        ("misspelt field", "terminationGracePeriodSecond",
         lambda r: find(r, gpu, "Deployment")["spec"]["template"]["spec"].update(
             terminationGracePeriodSecond=60)),
        ("HPA minReplicas as a string", "minReplicas",
         lambda r: find(r, gpu, "HorizontalPodAutoscaler")["spec"].update(minReplicas="2")),
        ("unknown kind", "no schema for",
         lambda r: r[gpu].append({"apiVersion": "example.com/v1", "kind": "Widget",
                                  "metadata": {"name": "w"}})),
        # CRD schemas.
        ("ServiceMonitor scheme not in its enum", "'tcp' is not one of",
         lambda r: find(r, gpu, "ServiceMonitor")["spec"]["endpoints"][0].update(scheme="tcp")),
        ("ServiceMonitor without selector", "'selector' is a required property",
         lambda r: find(r, gpu, "ServiceMonitor")["spec"].pop("selector")),
        ("ServiceMonitor misspelt field", "'intervall' was unexpected",
         lambda r: find(r, gpu, "ServiceMonitor")["spec"]["endpoints"][0].update(
             intervall="15s")),
        ("ServingRuntime model format without name", "'name' is a required property",
         lambda r: find(r, kserve, "ServingRuntime")["spec"]["supportedModelFormats"][0].pop(
             "name")),
        ("ServingRuntime container field of the wrong type (core/v1 Container)",
         "imagePullPolicy",
         lambda r: container(r, kserve, "ServingRuntime").update(imagePullPolicy=3)),
        # moe-server rules.
        ("liveness probe on another port", "livenessProbe checks port 9000",
         lambda r: container(r)["livenessProbe"]["grpc"].update(port=9000)),
        ("readiness probe over HTTP", "readinessProbe is not a gRPC health probe",
         lambda r: container(r).update(readinessProbe={"httpGet": {"path": "/", "port": 8002}})),
        ("no startup probe", "no startupProbe",
         lambda r: container(r).pop("startupProbe")),
        ("grace period shorter than the drain timeout", "is not longer than --drain-timeout",
         lambda r: find(r, gpu, "Deployment")["spec"]["template"]["spec"].update(
             terminationGracePeriodSeconds=20)),
        ("drain timeout raised in the flag file", "is not longer than --drain-timeout 60s",
         lambda r: set_flag_file(r, "serving.flags", "--drain_timeout=60s\n")),
        ("writable root filesystem", "readOnlyRootFilesystem is not true",
         lambda r: container(r)["securityContext"].update(readOnlyRootFilesystem=False)),
        ("capabilities kept", "capabilities.drop does not contain ALL",
         lambda r: container(r)["securityContext"]["capabilities"].update(drop=["NET_RAW"])),
        ("dashes in a flag file", "is not `--flag_name=value`",
         lambda r: set_flag_file(r, "serving.flags", "--max-queue=5\n")),
        ("--model in a flag file", "--model in a flag file is ignored",
         lambda r: set_flag_file(r, "backend.flags", "--model=m=/models/m\n")),
        ("--address not the grpc port", "is not the grpc port",
         lambda r: container(r).update(args=["--address=0.0.0.0:9001"] + container(r)["args"][1:])),
        ("Service port name missing", "targetPort grpcs is not a container port",
         lambda r: find(r, gpu, "Service")["spec"]["ports"][0].update(targetPort="grpcs")),
        ("ServiceMonitor on a port the Service lacks", "endpoint port 'http'",
         lambda r: find(r, gpu, "ServiceMonitor")["spec"]["endpoints"][0].update(port="http")),
        ("PDB selecting other pods", "PodDisruptionBudget/moe-serve: selector does not match",
         lambda r: find(r, gpu, "PodDisruptionBudget")["spec"]["selector"].update(
             matchLabels={"app": "other"})),
        ("HPA metric the adapter does not serve", "is not served by a rule",
         lambda r: find(r, gpu, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]
         ["metric"].update(name="moe_queue_depth")),
        ("adapter rule on an undocumented metric", "moe_request_queued is not documented",
         lambda r: set_adapter_rules(r, lambda rules: rules[0].update(
             seriesQuery='moe_request_queued{namespace!="",pod!=""}'))),
        ("adapter rule on a bare histogram", "used without _bucket/_sum/_count",
         lambda r: set_adapter_rules(r, lambda rules: rules[1].update(
             seriesQuery='moe_request_queue_duration_seconds{pod!=""}'))),
    ]
    for name, expect, mutate in cases:
        broken = copy.deepcopy(good)
        mutate(broken)
        errs = check_rendered(broken, crds_by_version, k8s_versions, doc)
        if not any(expect in e for e in errs):
            failures.append(f"{name}: expected an error containing {expect!r}, got {errs}")
        else:
            print(f"self-test: {name}: caught")

    # A scrape without the queue gauge fails the adapter rules.
    scraped = {"moe_request_queue_duration_seconds_sum", "moe_request_queue_duration_seconds_count"}
    errs = check_rendered(good, crds_by_version, k8s_versions, doc, scraped=scraped)
    if not any("moe_requests_queued has no sample" in e for e in errs):
        failures.append(f"scrape without moe_requests_queued: not caught: {errs}")
    else:
        print("self-test: scrape without moe_requests_queued: caught")

    # A kustomization naming a file that does not exist fails to build.
    with tempfile.TemporaryDirectory() as tmp:
        copy_dir = os.path.join(tmp, "k8s")
        shutil.copytree(K8S, copy_dir)
        path = os.path.join(copy_dir, "base", "kustomization.yaml")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.replace("- service.yaml", "- services.yaml"))
        _, errs = render_all(kubectl, copy_dir)
        if not any("kubectl kustomize" in e for e in errs):
            failures.append(f"kustomization naming a missing file: not caught: {errs}")
        else:
            print("self-test: kustomization naming a missing file: caught")
    print(f"validate_manifests self-test: {len(cases) + 2} cases")
    return failures


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubectl", default=shutil.which("kubectl"))
    ap.add_argument("--k8s-version", action="append", default=None,
                    help="Kubernetes version to validate against (repeatable); default: "
                         f"{', '.join(DEFAULT_K8S_VERSIONS)} and the newest shipped")
    ap.add_argument("--metrics-text", help="a /metrics scrape the adapter rules' metrics must be in")
    ap.add_argument("--adapter-metrics-only", action="store_true",
                    help="only check the adapter rules (with --metrics-text)")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args(argv)
    doc = check_dashboard.parse_metrics_doc(METRICS_DOC)
    scraped = check_dashboard.parse_exposition(args.metrics_text) if args.metrics_text else None

    if args.adapter_metrics_only:
        if scraped is None:
            ap.error("--adapter-metrics-only needs --metrics-text")
        objs = load_yaml_file(os.path.join(K8S, ADAPTER_DIR, "adapter-config.yaml"))
        errors = check_adapter_rules(adapter_rules(objs), doc, scraped)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        if errors:
            return 1
        print(f"validate_manifests: adapter rules read only metrics the server exports "
              f"({sorted(adapter_metric_names(adapter_rules(objs)))})")
        return 0

    if not args.kubectl or not os.access(args.kubectl, os.X_OK):
        print("validate_manifests: kubectl not found (Debian package kubernetes-client); "
              "pass --kubectl", file=sys.stderr)
        return 1
    versions = args.k8s_version or list(DEFAULT_K8S_VERSIONS) + [kv_utils.latest_version()]
    crds_by_version = {v: CrdSchemas(SCHEMAS, v) for v in versions}
    if not any(crds.validators for crds in crds_by_version.values()):
        print(f"validate_manifests: no CRD schema found in {SCHEMAS}", file=sys.stderr)
        return 1

    if args.self_test:
        failures = self_test(args.kubectl, crds_by_version, versions, doc)
        if failures:
            print("validate_manifests self-test: FAILED", file=sys.stderr)
            for f in failures:
                print(f"  - {f}", file=sys.stderr)
            return 1
        print("validate_manifests self-test: OK")
        return 0

    rendered, errors = render_all(args.kubectl)
    errors += check_rendered(rendered, crds_by_version, versions, doc, scraped)
    if errors:
        print(f"validate_manifests: {len(errors)} problem(s):", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    count = sum(len(objs) for objs in rendered.values())
    kinds = sorted({o["kind"] for objs in rendered.values() for o in objs})
    print(f"validate_manifests: OK: {count} objects ({', '.join(kinds)}) from "
          f"{', '.join(rendered)}; Kubernetes {', '.join(versions)}; kubernetes-validate "
          f"{kubernetes_validate.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
