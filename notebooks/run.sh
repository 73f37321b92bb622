#!/usr/bin/env bash
# Runs every notebook headless against a fresh pipeline run, as CI does:
#   1. a virtual environment with notebooks/requirements.txt (default target/notebooks-venv);
#   2. `lodestar demo --no-serve` on data-samples/ into a temporary data folder (the binary in
#      $LODESTAR_BIN, else one built here);
#   3. each notebook executed top to bottom (a cell that raises fails this script), executed copies
#      and figures kept in target/notebooks-out/;
#   4. the test population 02-models recounts from the snapshot checked against the report that
#      `lodestar models show --json` prints.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${NOTEBOOKS_VENV:-target/notebooks-venv}
out=target/notebooks-out
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r notebooks/requirements.txt
# LODESTAR_BIN: a lodestar binary already built (CI passes the one `cargo test --workspace` just
# linked; `cargo build -p lodestar` resolves features for one package and would rebuild much of the
# dependency tree a second time).
if [ -n "${LODESTAR_BIN:-}" ]; then
  [ -x "$LODESTAR_BIN" ] || { echo "LODESTAR_BIN=$LODESTAR_BIN is not an executable" >&2; exit 1; }
  lodestar=$LODESTAR_BIN
else
  cargo build --quiet -p lodestar
  lodestar=target/debug/lodestar
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset LODESTAR_DATABASE_URL DATABASE_URL LODESTAR_CONFIG
export LODESTAR_DATA_DIR="$work/data" LODESTAR_LOG=warn
"$lodestar" demo --no-serve > "$work/demo.txt"
"$lodestar" models show at-risk --json > "$work/models.json"
rm -rf "$out"
"$venv/bin/python" notebooks/execute.py --out "$out" --report "$work/models.json" notebooks/*.ipynb
echo "notebooks passed; executed copies and figures in $out"
