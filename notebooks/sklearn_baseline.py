"""scikit-learn baselines on a Lodestar feature snapshot, under Lodestar's own protocol.

Reads the snapshot's features.parquet (the same file `lodestar evaluate` reads), trains on the
training presentations' rows of students still registered at each row's week, and reports ROC AUC
at each as-of week on the test presentations' students still registered at the end of that week.
Only rows with a known outcome count: a running presentation's rows (no label yet) are left out, so
name finished presentations (the report's `train_presentations` and `test_presentations`).

    python notebooks/sklearn_baseline.py SNAPSHOT_DIR --train BBB-2013B --test BBB-2013J --weeks 5,10,20
    python notebooks/sklearn_baseline.py SNAPSHOT_DIR --time-all   # fit every family on every row

Protected attributes are left out, as in Lodestar's default model.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

NOT_FEATURES = {
    "code_module", "code_presentation", "id_student", "is_active", "final_result",
    "label_at_risk", "gender", "disability", "age_band", "imd_band", "region",
}


def load(snapshot: Path) -> pl.DataFrame:
    df = pl.read_parquet(snapshot / "features.parquet")
    return df.filter((pl.col("is_active") == 1) & pl.col("label_at_risk").is_not_null())


def features(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in NOT_FEATURES]


def matrix(df: pl.DataFrame, cols: list[str]) -> np.ndarray:
    return df.select([pl.col(c).cast(pl.Float64) for c in cols]).to_numpy()


def in_presentations(selectors: list[str]) -> pl.Expr:
    full = pl.concat_str([pl.col("code_module"), pl.lit("-"), pl.col("code_presentation")])
    return full.is_in(selectors) | pl.col("code_presentation").is_in(selectors)


def models(seed: int) -> dict:
    impute = lambda: SimpleImputer(strategy="median")  # noqa: E731
    return {
        "logistic": make_pipeline(impute(), StandardScaler(), LogisticRegression(max_iter=1000)),
        "forest": make_pipeline(impute(), RandomForestClassifier(
            n_estimators=60, max_depth=10, max_samples=20_000, max_features=0.6,
            min_samples_leaf=20, n_jobs=-1, random_state=seed)),
        "hist_gradient_boosting": HistGradientBoostingClassifier(random_state=seed),
        "mlp": make_pipeline(impute(), StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(32, 16), max_iter=4, batch_size=256, learning_rate_init=2e-3,
            random_state=seed)),
    }


def compare(args) -> dict:
    df = load(args.snapshot)
    cols = features(df)
    train = df.filter(in_presentations(args.train))
    test = df.filter(in_presentations(args.test))
    if train.height == 0 or test.height == 0:
        sys.exit(f"no rows for --train {args.train} or --test {args.test}")
    x, y = matrix(train, cols), train["label_at_risk"].to_numpy()
    out = {"snapshot": str(args.snapshot), "train": args.train, "test": args.test, "models": {}}
    for name in ["logistic", "hist_gradient_boosting"]:
        model = models(args.seed)[name]
        started = time.perf_counter()
        model.fit(x, y)
        seconds = time.perf_counter() - started
        weeks = {}
        for week in args.weeks:
            at = test.filter(pl.col("as_of_week") == week)
            p = model.predict_proba(matrix(at, cols))[:, 1]
            weeks[str(week)] = {"n": at.height, "roc_auc": roc_auc_score(at["label_at_risk"].to_numpy(), p)}
        out["models"][name] = {"fit_seconds": seconds, "weeks": weeks}
        print(f"{name:<24} fit {seconds:6.1f} s  " + "  ".join(
            f"week {w}: AUC {v['roc_auc']:.3f}" for w, v in weeks.items()))
    return out


def time_all(args) -> dict:
    df = load(args.snapshot)
    cols = features(df)
    x, y = matrix(df, cols), df["label_at_risk"].to_numpy()
    out = {"rows": df.height, "models": {}}
    total = 0.0
    for name, model in models(args.seed).items():
        started = time.perf_counter()
        model.fit(x, y)
        seconds = time.perf_counter() - started
        total += seconds
        out["models"][name] = seconds
        print(f"{name:<24} {seconds:6.1f} s on {df.height} rows")
    out["total_seconds"] = total
    print(f"{'total':<24} {total:6.1f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("snapshot", type=Path)
    ap.add_argument("--train", default="2013B", type=lambda s: s.split(","))
    ap.add_argument("--test", default="2013J", type=lambda s: s.split(","))
    ap.add_argument("--weeks", default="5,10,20", type=lambda s: [int(w) for w in s.split(",")])
    ap.add_argument("--seed", default=42, type=int)
    ap.add_argument("--time-all", action="store_true", help="time every family on every row")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()
    out = time_all(args) if args.time_all else compare(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
