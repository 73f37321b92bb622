"""Executes Lodestar's notebooks headless and checks them.

    python notebooks/execute.py --out DIR [--report MODELS_JSON] notebooks/*.ipynb

Each notebook must be committed with its outputs stripped; it is run top to bottom with nbclient
(what `jupyter nbconvert --execute` uses) in the notebooks folder, and a cell that raises fails the
run. The executed copies and the figures the notebooks write land in DIR. With --report (the output
of `lodestar models show MODEL --json`), the test population the notebook recounted from the
snapshot must equal the one in the report the CLI printed, week by week.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import nbformat
from jupyter_client import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def stripped(nb) -> list[int]:
    return [
        i for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))
    ]


def check_report(report_path: Path, figures_path: Path) -> None:
    versions = json.loads(report_path.read_text())
    figures = json.loads(figures_path.read_text())
    version = next(v for v in versions if v["version"] == figures["version"])
    cli = {str(w["week"]): (w["n"], w["positives"]) for w in version["report"]["weeks"]}
    notebook = {k: (v["n"], v["positives"]) for k, v in figures["weeks"].items()}
    if cli != notebook:
        sys.exit(f"02-models recounted {notebook} but the CLI's report says {cli}")
    print(f"02-models agrees with `lodestar models show`: (n, at risk) by week {notebook}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--report", type=Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["LODESTAR_NOTEBOOK_OUT"] = str(args.out.resolve())
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        dirty = stripped(nb)
        if dirty:
            sys.exit(f"{path}: cells {dirty} carry outputs; commit notebooks with outputs stripped")
        # The kernel talks over Unix sockets in the output folder, not TCP.
        km = KernelManager(kernel_name="python3", transport="ipc", ip=str(args.out.resolve() / "kernel"))
        client = NotebookClient(
            nb, km=km, timeout=900, kernel_name="python3",
            resources={"metadata": {"path": str(path.parent.resolve())}},
        )
        try:
            client.execute()
        except CellExecutionError as e:
            nbformat.write(nb, args.out / path.name)
            sys.exit(f"{path} failed:\n{e}")
        nbformat.write(nb, args.out / path.name)
        print(f"{path}: ran {len(nb.cells)} cells")
    if args.report:
        check_report(args.report, args.out / "figures-02.json")


if __name__ == "__main__":
    main()
