#!/usr/bin/env python3
"""Cut the genuine OULAD slice in data-samples/oulad from ../shared/datasets/oulad-2013.

Rows are copied byte for byte (quoting, CRLF and empty-string nulls as in the original); only
rows are dropped. The slice keeps three presentations:
  BBB-2013B and BBB-2013J, every student whose id_student is even (about half), so a model can be
  trained on 2013B and tested on 2013J (temporal evaluation within one module);
  GGG-2013J whole (a second module with a different assessment plan).
Run:  python3 data-samples/make_slice.py [SOURCE_DIR] [OUT_DIR]
"""
import csv
import gzip
import io
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "shared", "datasets", "oulad-2013")
OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "oulad")
KEEP = {("BBB", "2013B"), ("BBB", "2013J"), ("GGG", "2013J")}


def keep_student(module, presentation, student):
    if (module, presentation) not in KEEP:
        return False
    return module != "BBB" or int(student) % 2 == 0


def open_in(name):
    path = os.path.join(SRC, name)
    if os.path.exists(path):
        return open(path, "rb")
    return gzip.open(path + ".gz", "rb")


def filter_table(name, predicate, compress=False):
    """Copy the header and every line whose parsed fields satisfy predicate(row dict)."""
    out_path = os.path.join(OUT, name + (".gz" if compress else ""))
    tmp = out_path + ".tmp"
    raw = open(tmp, "wb")
    sink = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if compress else raw
    kept = 0
    with open_in(name) as src:
        header_line = src.readline()
        header = next(csv.reader([header_line.decode("utf-8")]))
        sink.write(header_line)
        for line in src:
            row = dict(zip(header, next(csv.reader([line.decode("utf-8")]))))
            if predicate(row):
                sink.write(line)
                kept += 1
    if compress:
        sink.close()
    raw.close()
    os.replace(tmp, out_path)
    print(f"{name}: {kept} rows")


def main():
    os.makedirs(OUT, exist_ok=True)
    in_keep = lambda r: (r["code_module"], r["code_presentation"]) in KEEP
    filter_table("courses.csv", in_keep)
    assessments = set()
    with open_in("assessments.csv") as f:
        for r in csv.DictReader(io.TextIOWrapper(f, encoding="utf-8", newline="")):
            if in_keep(r):
                assessments.add(r["id_assessment"])
    filter_table("assessments.csv", in_keep)
    filter_table("vle.csv", in_keep)
    student_of = lambda r: keep_student(r["code_module"], r["code_presentation"], r["id_student"])
    filter_table("studentInfo.csv", student_of)
    filter_table("studentRegistration.csv", student_of)
    # studentAssessment has no presentation column: keep rows of kept assessments whose student
    # is kept in that assessment's presentation.
    kept_students = set()
    with open_in("studentInfo.csv") as f:
        for r in csv.DictReader(io.TextIOWrapper(f, encoding="utf-8", newline="")):
            if student_of(r):
                kept_students.add((r["code_module"], r["code_presentation"], r["id_student"]))
    presentation_of = {}
    with open_in("assessments.csv") as f:
        for r in csv.DictReader(io.TextIOWrapper(f, encoding="utf-8", newline="")):
            presentation_of[r["id_assessment"]] = (r["code_module"], r["code_presentation"])
    filter_table(
        "studentAssessment.csv",
        lambda r: r["id_assessment"] in assessments
        and presentation_of[r["id_assessment"]] + (r["id_student"],) in kept_students,
    )
    filter_table("studentVle.csv", student_of, compress=True)


if __name__ == "__main__":
    main()
