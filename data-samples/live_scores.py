#!/usr/bin/env python3
"""How well the live scores of a term cut as running predicted the outcomes removed from it.

`lodestar cut --export DIR --running P --as-of-day N --out CUT --outcomes OUTCOMES.csv` makes a
mid-term export and keeps the removed outcomes aside; `lodestar pipeline run --export CUT`
scores the running term; this script reads the scores from the data folder's SQLite store and
the outcomes file and prints, per presentation and week, the students scored, how many turned out
at risk (Fail or Withdrawn, the default label) and the ROC AUC of the live scores against that.

    python3 data-samples/live_scores.py --db lodestar-data/lodestar.db --outcomes OUTCOMES.csv

Standard library only. With --json the figures print as JSON.
"""

import argparse
import csv
import json
import sqlite3
import sys

AT_RISK = {"Fail", "Withdrawn"}


def auc(scores, labels):
    """ROC AUC by the rank-sum (ties count half); None when one class is missing."""
    pairs = sorted(zip(scores, labels))
    pos = sum(1 for _, y in pairs if y)
    neg = len(pairs) - pos
    if pos == 0 or neg == 0:
        return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        mean_rank = (i + 1 + j) / 2.0
        rank_sum += mean_rank * sum(1 for k in range(i, j) if pairs[k][1])
        i = j
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="the data folder's lodestar.db")
    ap.add_argument("--outcomes", required=True, help="the outcomes file lodestar cut wrote")
    ap.add_argument("--model", default="at-risk")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    outcomes = {}
    with open(a.outcomes, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["code_module"], row["code_presentation"], int(row["id_student"]))
            outcomes[key] = row["final_result"]
    if not outcomes:
        sys.exit(f"{a.outcomes}: no outcomes")
    presentations = sorted({(m, p) for m, p, _ in outcomes})

    db = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True)
    figures = []
    for module, code in presentations:
        # The latest model version that scored each week.
        rows = db.execute(
            "SELECT p.as_of_week, p.id_student, p.probability FROM predictions p "
            "WHERE p.model = ? AND p.code_module = ? AND p.code_presentation = ? "
            "AND p.version = (SELECT MAX(q.version) FROM predictions q WHERE q.model = p.model "
            "AND q.code_module = p.code_module AND q.code_presentation = p.code_presentation "
            "AND q.as_of_week = p.as_of_week)",
            (a.model, module, code),
        ).fetchall()
        by_week = {}
        for week, student, p in rows:
            result = outcomes.get((module, code, student))
            if result is None:
                continue
            by_week.setdefault(week, []).append((p, result in AT_RISK))
        for week in sorted(by_week):
            scored = by_week[week]
            figures.append(
                {
                    "presentation": f"{module}-{code}",
                    "week": week,
                    "scored": len(scored),
                    "at_risk": sum(1 for _, y in scored if y),
                    "roc_auc": auc([s for s, _ in scored], [y for _, y in scored]),
                }
            )
    if a.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{'presentation':<14} {'week':>4} {'scored':>7} {'at risk':>8} {'ROC AUC':>8}")
    for f in figures:
        shown = "n/a" if f["roc_auc"] is None else f"{f['roc_auc']:.3f}"
        print(
            f"{f['presentation']:<14} {f['week']:>4} {f['scored']:>7} {f['at_risk']:>8} {shown:>8}"
        )


if __name__ == "__main__":
    main()
