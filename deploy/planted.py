"""deploy/check --planted: plants one mistake at a time in a copy of deploy/, runs deploy/check on
the copy, and shows the lines that caught it. Exits 1 if any planted mistake passes unnoticed."""

import pathlib
import shutil
import subprocess
import sys
import tempfile

# (what, file, text there, replacement)
PLANTED = [
    ("two nightly runs at once", "k8s/base/pipeline-cronjob.yaml",
     "concurrencyPolicy: Forbid", "concurrencyPolicy: Allow"),
    ("GPU limit above its request", "k8s/overlays/prod/gpu-pipeline.yaml",
     "                limits:\n                  cpu: \"4\"\n                  memory: 16Gi\n                  nvidia.com/gpu: 1",
     "                limits:\n                  cpu: \"4\"\n                  memory: 16Gi\n                  nvidia.com/gpu: 2"),
    ("the latest tag", "k8s/overlays/prod/kustomization.yaml",
     "newName: registry.example.edu/lodestar/dashboard\n    newTag: 0.1.0",
     "newName: registry.example.edu/lodestar/dashboard\n    newTag: latest"),
    ("a root container", "k8s/base/api.yaml", "runAsNonRoot: true", "runAsNonRoot: false"),
    ("a misspelt probe", "k8s/base/dashboard.yaml", "readinessProbe:", "readynessProbe:"),
    ("liveness on the database", "k8s/base/api.yaml",
     "          livenessProbe:\n            httpGet:\n              path: /healthz",
     "          livenessProbe:\n            httpGet:\n              path: /readyz"),
    ("a second SQLite replica", "k8s/overlays/dev/one-process.yaml", "  replicas: 1", "  replicas: 2"),
    ("a public port", "compose.yaml", '"127.0.0.1:8081:8080"', '"8081:8080"'),
    ("an unknown depends_on condition", "compose.yaml",
     "condition: service_healthy", "condition: service_ready"),
    ("root in the image", "Dockerfile", "USER 65532:65532\nWORKDIR /var/lib/lodestar\nENV LODESTAR_DATA_DIR=/var/lib/lodestar \\\n    LODESTAR_LISTEN",
     "USER root\nWORKDIR /var/lib/lodestar\nENV LODESTAR_DATA_DIR=/var/lib/lodestar \\\n    LODESTAR_LISTEN"),
    ("broken YAML indentation", "knative/service.yaml",
     "        autoscaling.knative.dev/min-scale: \"0\"", "      autoscaling.knative.dev/min-scale: \"0\""),
    ("Knative never scaling to zero", "knative/service.yaml",
     'autoscaling.knative.dev/min-scale: "0"', 'autoscaling.knative.dev/min-scale: "1"'),
]

CAUGHT = ("FAIL", "error", "Error", "ERROR", "DL3", "DL4", "invalid", "Invalid", "is not valid",
          "not one of", "Additional properties")


def main():
    deploy = pathlib.Path(sys.argv[1]).resolve()
    missed = []
    for what, rel, old, new in PLANTED:
        with tempfile.TemporaryDirectory() as tmp:
            copy = pathlib.Path(tmp) / "deploy"
            shutil.copytree(deploy, copy)
            target = copy / rel
            text = target.read_text(encoding="utf-8")
            if old not in text:
                print(f"planted.py: {rel} no longer holds the text to replace for {what!r}")
                sys.exit(2)
            target.write_text(text.replace(old, new, 1), encoding="utf-8")
            run = subprocess.run([str(deploy / "check"), "--tree", str(copy)],
                                 capture_output=True, text=True)
            lines = [l for l in (run.stdout + run.stderr).splitlines()
                     if any(c in l for c in CAUGHT) and "deploy/check: FAILED" not in l]
            if run.returncode == 0:
                missed.append(what)
                print(f"MISSED  {what} ({rel}): deploy/check passed")
            else:
                print(f"caught  {what} ({rel}):")
                for l in lines[:3]:
                    print(f"        {l.replace(str(copy), 'deploy')}")
    if missed:
        print(f"planted: {len(missed)} mistake(s) passed unnoticed: {', '.join(missed)}")
        sys.exit(1)
    print(f"planted: all {len(PLANTED)} mistakes caught")


if __name__ == "__main__":
    main()
