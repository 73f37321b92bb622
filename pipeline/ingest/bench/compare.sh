#!/usr/bin/env bash
# Runs Lodestar's ingest and the python polars baseline on the same export, one after the other,
# prints wall time and peak memory of each, then checks that their outputs agree.
#   pipeline/ingest/bench/compare.sh EXPORT_DIR [LODESTAR_BINARY] [PYTHON]
# Needs GNU time (/usr/bin/time) and python polars (pip install polars).
set -euo pipefail
export_dir=$1
lodestar=${2:-target/release/lodestar}
python=${3:-python3}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
measure() { /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>&1 || { cat "$work/out"; exit 1; }; read -r wall kb <"$work/time"; echo "$wall s, peak $((kb / 1024)) MiB"; }
echo "lodestar ingest:  $(measure "$lodestar" --log warn --data-dir "$work/lodestar" ingest --export "$export_dir" --force)"
echo "python polars:    $(measure "$python" "$here/baseline.py" "$export_dir" "$work/baseline.parquet")"
"$python" "$here/agree.py" "$(ls "$work"/lodestar/snapshots/*/features.parquet)" "$work/baseline.parquet"
