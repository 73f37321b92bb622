#!/usr/bin/env python3
"""Check that an export reads in python polars (and pandas) with the same columns and dtypes as
the genuine OULAD files.

    python3 data-samples/check_schema.py GENERATED_DIR [GENUINE_DIR]

GENUINE_DIR defaults to the full 2013 tables in ../shared/datasets/oulad-2013 beside the
checkout (the slice in data-samples/oulad lacks the fractional assessment weights that make
`weight` a float column). Needs `pip install polars pandas`. Exits 1 on any
difference and prints each table's schema.
"""
import os
import sys

import pandas as pd
import polars as pl

TABLES = ["courses", "assessments", "vle", "studentInfo", "studentRegistration", "studentAssessment", "studentVle"]


def path_of(folder, table):
    for ext in (".csv", ".csv.gz"):
        p = os.path.join(folder, table + ext)
        if os.path.exists(p):
            return p
    raise SystemExit(f"{folder}: no {table}.csv or {table}.csv.gz")


def schemas(folder, table):
    p = path_of(folder, table)
    # polars infers from the first 100 rows by default; use the whole file so a column that is
    # empty early on is typed by its later values, as a careful analyst would.
    df = pl.read_csv(p, infer_schema_length=None)
    pd_df = pd.read_csv(p, nrows=200_000)
    return [(c, str(t)) for c, t in df.schema.items()], [(c, str(t)) for c, t in pd_df.dtypes.items()], df.height


def main():
    generated = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    genuine = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "..", "shared", "datasets", "oulad-2013")
    failed = False
    for table in TABLES:
        gen_pl, gen_pd, gen_rows = schemas(generated, table)
        real_pl, real_pd, real_rows = schemas(genuine, table)
        ok = gen_pl == real_pl and gen_pd == real_pd
        failed |= not ok
        print(f"{'ok  ' if ok else 'DIFF'} {table}: {gen_rows} rows (genuine {real_rows})")
        print(f"     polars {gen_pl}")
        print(f"     pandas {gen_pd}")
        if not ok:
            print(f"     genuine polars {real_pl}\n     genuine pandas {real_pd}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
