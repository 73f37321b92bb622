"""What schemas cannot see in Lodestar's deployment files: deploy/check runs this on the rendered
Kustomize overlays, the Knative Service, compose.yaml and the Dockerfile. Prints one line per
finding, naming the object and the field, and exits 1 when there is any.

    python policy.py --overlay dev=dev.yaml --overlay prod=prod.yaml --knative kn.yaml \
        --knative-pod kn-pod.yaml --compose compose.yaml --dockerfile Dockerfile
"""

import argparse
import base64
import re
import sys

import yaml

findings = []


def finding(where, what):
    findings.append(f"{where}: {what}")


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def pod_spec(doc):
    kind = doc.get("kind")
    spec = doc.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return spec.get("template", {}).get("spec", {})
    if kind == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    if kind == "Service" and doc.get("apiVersion", "").startswith("serving.knative.dev/"):
        return spec.get("template", {}).get("spec", {})
    return None


def check_image(where, image):
    if not image:
        finding(where, "no image")
        return
    if "@sha256:" in image:
        return
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        finding(where, f"image {image!r} has no tag (an untagged image is :latest)")
    elif last.endswith(":latest"):
        finding(where, f"image {image!r} uses the latest tag; pin a version")


def check_pod(where, spec, services=True, knative=False):
    """Non-root, read-only root filesystem, no capabilities, resources, and (for services) probes."""
    psc = spec.get("securityContext", {})
    if spec.get("automountServiceAccountToken") is not False:
        finding(where, "automountServiceAccountToken must be false (Lodestar never calls the Kubernetes API)")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        cw = f"{where} container {c.get('name')}"
        check_image(cw, c.get("image"))
        csc = c.get("securityContext", {})
        non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        user = csc.get("runAsUser", psc.get("runAsUser"))
        if non_root is not True:
            finding(cw, "runAsNonRoot must be true")
        if not isinstance(user, int) or user == 0:
            finding(cw, f"runAsUser must be a numeric non-root UID, got {user!r}")
        if csc.get("readOnlyRootFilesystem") is not True:
            finding(cw, "securityContext.readOnlyRootFilesystem must be true")
        if csc.get("allowPrivilegeEscalation") is not False:
            finding(cw, "securityContext.allowPrivilegeEscalation must be false")
        if "ALL" not in (csc.get("capabilities", {}).get("drop") or []):
            finding(cw, "securityContext.capabilities.drop must hold ALL")
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(part) or {}):
                    finding(cw, f"resources.{part}.{r} missing")
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        for key in set(requests) | set(limits):
            if key.endswith("/gpu") and str(requests.get(key)) != str(limits.get(key)):
                finding(
                    cw,
                    f"{key}: request {requests.get(key)!r} and limit {limits.get(key)!r} must be equal",
                )
        if services:
            probes = ("readinessProbe", "livenessProbe") if knative else (
                "startupProbe", "readinessProbe", "livenessProbe")
            for probe in probes:
                if probe not in c:
                    finding(cw, f"{probe} missing")
            ready = c.get("readinessProbe", {}).get("httpGet", {}).get("path")
            live = c.get("livenessProbe", {}).get("httpGet", {}).get("path")
            if "readinessProbe" in c and ready != "/readyz":
                finding(cw, f"readinessProbe must ask /readyz, asks {ready!r}")
            if "livenessProbe" in c and live != "/healthz":
                finding(cw, f"livenessProbe must ask /healthz (a database outage must not restart pods), asks {live!r}")


def check_overlay(label, docs):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    deployments = by_kind.get("Deployment", [])
    for d in deployments:
        check_pod(f"{label} {name(d)}", pod_spec(d))
    for cj in by_kind.get("CronJob", []):
        where = f"{label} {name(cj)}"
        spec = cj.get("spec", {})
        if spec.get("concurrencyPolicy") != "Forbid":
            finding(where, f"concurrencyPolicy must be Forbid (one pipeline run at a time), is {spec.get('concurrencyPolicy')!r}")
        for field in ("timeZone", "startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
            if field not in spec:
                finding(where, f"spec.{field} missing")
        job = spec.get("jobTemplate", {}).get("spec", {})
        for field in ("backoffLimit", "activeDeadlineSeconds"):
            if field not in job:
                finding(where, f"jobTemplate.spec.{field} missing")
        check_pod(where, pod_spec(cj), services=False)
    # Every autoscaler and disruption budget points at a Deployment that exists.
    pod_labels = {d["metadata"]["name"]: d["spec"]["template"]["metadata"].get("labels", {}) for d in deployments}
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        target = hpa["spec"]["scaleTargetRef"]["name"]
        if target not in pod_labels:
            finding(f"{label} {name(hpa)}", f"scales {target!r}, which is not rendered")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        sel = pdb["spec"].get("selector", {}).get("matchLabels", {})
        if not any(all(l.get(k) == v for k, v in sel.items()) for l in pod_labels.values()):
            finding(f"{label} {name(pdb)}", f"selects {sel}, which no Deployment's pods carry")
    for svc in by_kind.get("Service", []):
        sel = svc["spec"].get("selector", {})
        if not any(all(l.get(k) == v for k, v in sel.items()) for l in pod_labels.values()):
            finding(f"{label} {name(svc)}", f"selects {sel}, which no Deployment's pods carry")
    # SQLite means exactly one process writing: one replica, nothing to scale it.
    sqlite = False
    for s in by_kind.get("Secret", []):
        for key, value in (s.get("data") or {}).items():
            if base64.b64decode(value).decode("utf-8", "replace").startswith("sqlite:"):
                sqlite = True
    if sqlite:
        if len(deployments) != 1 or deployments[0]["spec"].get("replicas") != 1:
            finding(label, "the database is SQLite: exactly one Deployment with replicas: 1")
        for kind in ("HorizontalPodAutoscaler", "CronJob"):
            for d in by_kind.get(kind, []):
                finding(f"{label} {name(d)}", "the database is SQLite: a second writer or a scaler is not allowed")
        for d in deployments:
            if d["spec"].get("strategy", {}).get("type") != "Recreate":
                finding(f"{label} {name(d)}", "on SQLite the rollout strategy must be Recreate (never two pods at once)")


def check_knative(docs, pod_out):
    pods = []
    for d in docs:
        if d.get("kind") != "Service" or not d.get("apiVersion", "").startswith("serving.knative.dev/"):
            continue
        where = f"knative {name(d)}"
        ann = d["spec"]["template"].get("metadata", {}).get("annotations", {})
        if ann.get("autoscaling.knative.dev/min-scale") != "0":
            finding(where, "autoscaling.knative.dev/min-scale must be \"0\" (scale to zero)")
        if "autoscaling.knative.dev/target" not in ann and not d["spec"]["template"]["spec"].get("containerConcurrency"):
            finding(where, "no concurrency target (autoscaling.knative.dev/target)")
        spec = pod_spec(d)
        check_pod(where, spec, knative=True)
        # The revision's pod spec is validated as a Pod; Knative fills in the probes' port.
        pod_spec_copy = yaml.safe_load(yaml.safe_dump(spec))
        for k in ("containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds"):
            pod_spec_copy.pop(k, None)
        for c in pod_spec_copy.get("containers", []):
            port = (c.get("ports") or [{}])[0].get("containerPort", 8080)
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe in c and "httpGet" in c[probe]:
                    c[probe]["httpGet"].setdefault("port", port)
        pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": d["metadata"]["name"]}, "spec": pod_spec_copy})
    if not pods:
        finding("knative", "no Knative Service rendered")
    with open(pod_out, "w", encoding="utf-8") as f:
        yaml.safe_dump_all(pods, f)


def check_compose(path):
    doc = yaml.safe_load(open(path, encoding="utf-8"))
    for svc, s in (doc.get("services") or {}).items():
        where = f"compose service {svc}"
        check_image(where, s.get("image"))
        for p in s.get("ports") or []:
            text = p if isinstance(p, str) else f"{p.get('host_ip', '')}:{p.get('published', '')}"
            if not str(text).startswith("127.0.0.1:"):
                finding(where, f"port {p!r} must be bound to 127.0.0.1")
        for dep, cond in (s.get("depends_on") or {}).items() if isinstance(s.get("depends_on"), dict) else []:
            if cond.get("condition") not in ("service_healthy", "service_completed_successfully"):
                finding(where, f"depends_on {dep}: wait for service_healthy, not {cond.get('condition')!r}")
        if isinstance(s.get("depends_on"), list):
            finding(where, "depends_on as a list does not wait for health; use condition: service_healthy")
        if "build" in s:
            if not s.get("read_only"):
                finding(where, "read_only: true expected for Lodestar's services")
            if str(s.get("user", "")).split(":")[0] in ("", "0", "root"):
                finding(where, "user must be a numeric non-root UID")
            if "ALL" not in (s.get("cap_drop") or []):
                finding(where, "cap_drop must hold ALL")
            if s.get("profiles") is None and "healthcheck" not in s:
                finding(where, "a long-running service needs a healthcheck")
    for secret, spec in (doc.get("secrets") or {}).items():
        if "environment" in spec:
            finding(f"compose secret {secret}", "secrets come from files, not the environment")


def check_dockerfile(path):
    stages, user = {}, {}
    current = None
    args = {}
    for raw in open(path, encoding="utf-8"):
        line = raw.strip()
        if line.startswith("ARG ") and current is None and "=" in line:
            k, v = line[4:].split("=", 1)
            args[k] = v
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            image = re.sub(r"\$\{(\w+)\}", lambda a: args.get(a.group(1), a.group(0)), m.group(1))
            current = m.group(2) or image
            stages[current] = image
            user[current] = user.get(image)
            if image not in stages:
                check_image(f"Dockerfile stage {current}", image)
        m = re.match(r"USER\s+(\S+)", line, re.I)
        if m and current:
            user[current] = m.group(1)
    for target in ("api", "dashboard", "scheduler", "pipeline", "pipeline-gpu"):
        if target not in stages:
            finding("Dockerfile", f"no target {target!r}")
            continue
        u = (user.get(target) or "").split(":")[0]
        if not u.isdigit() or u == "0":
            finding(f"Dockerfile target {target}", f"USER must be a numeric non-root UID, is {user.get(target)!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--overlay", action="append", default=[], help="LABEL=rendered.yaml")
    ap.add_argument("--knative", required=True)
    ap.add_argument("--knative-pod", required=True, help="where to write the revision as a Pod")
    ap.add_argument("--compose", required=True)
    ap.add_argument("--dockerfile", required=True)
    a = ap.parse_args()
    for item in a.overlay:
        label, path = item.split("=", 1)
        check_overlay(label, load_all(path))
    check_knative(load_all(a.knative), a.knative_pod)
    check_compose(a.compose)
    check_dockerfile(a.dockerfile)
    for f in findings:
        print(f"POLICY FAIL {f}")
    if findings:
        print(f"policy: {len(findings)} finding(s)")
        sys.exit(1)
    print("policy: ok")


if __name__ == "__main__":
    main()
