//! Cutting the genuine OULAD slice as a running term: the cut presentation loses its outcomes and
//! everything dated after the as-of day, the others are untouched byte for byte, the removed
//! outcomes go to their own file, a second cut changes nothing, and a failed cut leaves nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use lodestar_domain::Table;
use lodestar_samples::{CutError, cut_running, oulad_slice_dir};

const GGG: &str = "GGG-2013J";
const DAY: i32 = 76;

fn table_path(dir: &Path, table: Table) -> PathBuf {
    let plain = dir.join(format!("{}.csv", table.file_stem()));
    if plain.exists() {
        plain
    } else {
        dir.join(format!("{}.csv.gz", table.file_stem()))
    }
}

/// The table's text, decompressed.
fn text(dir: &Path, table: Table) -> String {
    let path = table_path(dir, table);
    let raw = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = String::new();
        MultiGzDecoder::new(raw.as_slice())
            .read_to_string(&mut out)
            .unwrap();
        out
    } else {
        String::from_utf8(raw).unwrap()
    }
}

/// Lines with their CRLF, header first.
fn lines(dir: &Path, table: Table) -> Vec<String> {
    let text = text(dir, table);
    assert!(
        text.ends_with("\r\n"),
        "{table}: last line must end in CRLF"
    );
    text.split_inclusive("\r\n").map(str::to_owned).collect()
}

/// The fields of an OULAD line (every field quoted, no quotes or commas inside).
fn fields(line: &str) -> Vec<&str> {
    line.trim_end_matches("\r\n")
        .strip_prefix('"')
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not fully quoted: {line:?}"))
        .split("\",\"")
        .collect()
}

fn is_ggg(f: &[&str]) -> bool {
    f[0] == "GGG" && f[1] == "2013J"
}

/// The assessment ids of GGG-2013J.
fn ggg_assessments(dir: &Path) -> BTreeSet<String> {
    lines(dir, Table::Assessments)[1..]
        .iter()
        .map(|l| fields(l))
        .filter(|f| is_ggg(f))
        .map(|f| f[2].to_owned())
        .collect()
}

/// Whether a line of `table` belongs to GGG-2013J.
fn ggg_row(table: Table, line: &str, assessments: &BTreeSet<String>) -> bool {
    let f = fields(line);
    match table {
        Table::StudentAssessment => assessments.contains(f[0]),
        Table::Vle => f[1] == "GGG" && f[2] == "2013J",
        _ => is_ggg(&f),
    }
}

fn cut(src: &Path, dst: &Path, outcomes: Option<&Path>) -> lodestar_samples::CutSummary {
    cut_running(src, dst, &[GGG.to_owned()], DAY, outcomes)
        .unwrap_or_else(|e| panic!("cut {}: {e}", src.display()))
}

#[test]
fn the_genuine_slice_cut_at_day_76_is_a_running_term_and_the_rest_is_untouched() {
    let src = oulad_slice_dir();
    let work = tempfile::tempdir().unwrap();
    let dst = work.path().join("running");
    let outcomes = work.path().join("outcomes.csv");
    let summary = cut(&src, &dst, Some(&outcomes));
    let assessments = ggg_assessments(&src);
    assert!(!assessments.is_empty());

    // The same seven files, same names and compression, and nothing else.
    let names = |dir: &Path| {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".csv"))
            .collect::<BTreeSet<_>>()
    };
    let written: BTreeSet<_> = fs::read_dir(&dst)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(written, names(&src));
    assert!(written.contains("studentVle.csv.gz"), "{written:?}");
    let staging: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(staging.is_empty(), "staging left behind: {staging:?}");

    for table in Table::ALL {
        let before = lines(&src, table);
        let after = lines(&dst, table);
        assert_eq!(before[0], after[0], "{table}: header changed");
        // Everything not of GGG-2013J is byte-identical, in the same order.
        let others = |l: &[String]| -> Vec<String> {
            l[1..]
                .iter()
                .filter(|l| !ggg_row(table, l, &assessments))
                .cloned()
                .collect()
        };
        assert_eq!(
            others(&before),
            others(&after),
            "{table}: other rows changed"
        );
        let (ggg_before, ggg_after): (Vec<_>, Vec<_>) = (
            before[1..]
                .iter()
                .filter(|l| ggg_row(table, l, &assessments))
                .collect(),
            after[1..]
                .iter()
                .filter(|l| ggg_row(table, l, &assessments))
                .collect(),
        );
        assert!(!ggg_before.is_empty(), "{table} has no GGG-2013J rows");
        let cut = &summary.tables[&table];
        assert_eq!(cut.rows_read as usize, before.len() - 1, "{table}");
        assert_eq!(
            cut.rows_dropped as usize,
            before.len() - after.len(),
            "{table}"
        );
        assert_eq!(cut.file, table_path(&dst, table));
        match table {
            Table::Courses | Table::Assessments | Table::Vle => {
                assert_eq!(before, after, "{table} must be copied unchanged");
                assert_eq!((cut.rows_dropped, cut.fields_emptied), (0, 0));
            }
            Table::StudentInfo => {
                assert_eq!(ggg_before.len(), 952);
                assert_eq!(ggg_after.len(), 952);
                for (b, a) in ggg_before.iter().zip(&ggg_after) {
                    let (fb, fa) = (fields(b), fields(a));
                    assert_eq!(fa[11], "", "an outcome is left: {a:?}");
                    assert!(!fb[11].is_empty());
                    assert_eq!(fb[..11], fa[..11], "only the outcome may change");
                }
                assert_eq!(summary.students, 952);
                assert_eq!(summary.outcomes_removed, 952);
                assert_eq!(cut.fields_emptied, 952);
            }
            Table::StudentRegistration => {
                let mut emptied = 0;
                for (b, a) in ggg_before.iter().zip(&ggg_after) {
                    let (fb, fa) = (fields(b), fields(a));
                    assert_eq!(fb[..4], fa[..4]);
                    match fb[4].parse::<i32>() {
                        Ok(day) if day > DAY => {
                            assert_eq!(fa[4], "", "{a:?}");
                            emptied += 1;
                        }
                        _ => assert_eq!(b, a),
                    }
                }
                assert!(emptied > 0, "no GGG-2013J unregistration after day {DAY}");
                assert_eq!(cut.fields_emptied, emptied);
            }
            Table::StudentAssessment | Table::StudentVle => {
                let date = if table == Table::StudentVle { 4 } else { 2 };
                let day = |l: &str| fields(l)[date].parse::<i32>().unwrap();
                let kept: Vec<_> = ggg_before
                    .iter()
                    .filter(|l| day(l) <= DAY)
                    .copied()
                    .collect();
                assert_eq!(kept, ggg_after, "{table}: GGG-2013J rows kept");
                assert!(!kept.is_empty() && kept.len() < ggg_before.len(), "{table}");
                assert!(ggg_after.iter().all(|l| day(l) <= DAY));
                assert_eq!(cut.fields_emptied, 0);
            }
        }
    }

    // The outcomes: every GGG-2013J student with the source's values, outside the cut export.
    let (path, rows) = summary.outcomes.clone().unwrap();
    assert_eq!(path, outcomes);
    assert_eq!(rows, 952);
    let out = fs::read_to_string(&outcomes).unwrap();
    let mut out_lines = out.split_terminator("\r\n");
    assert_eq!(
        out_lines.next().unwrap(),
        "\"code_module\",\"code_presentation\",\"id_student\",\"final_result\",\"date_unregistration\""
    );
    let got: BTreeMap<String, (String, String)> = out_lines
        .map(|l| {
            let f = fields(l);
            assert_eq!((f[0], f[1]), ("GGG", "2013J"));
            (f[2].to_owned(), (f[3].to_owned(), f[4].to_owned()))
        })
        .collect();
    let results: BTreeMap<String, String> = lines(&src, Table::StudentInfo)[1..]
        .iter()
        .map(|l| fields(l))
        .filter(|f| is_ggg(f))
        .map(|f| (f[2].to_owned(), f[11].to_owned()))
        .collect();
    let unregistered: BTreeMap<String, String> = lines(&src, Table::StudentRegistration)[1..]
        .iter()
        .map(|l| fields(l))
        .filter(|f| is_ggg(f))
        .map(|f| (f[2].to_owned(), f[4].to_owned()))
        .collect();
    assert_eq!(got.len(), 952);
    for (student, (result, unreg)) in &got {
        assert_eq!(&results[student], result);
        assert_eq!(&unregistered[student], unreg);
    }
    assert!(got.values().any(|(r, _)| r == "Withdrawn"));
}

#[test]
fn a_second_cut_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let (once, twice) = (work.path().join("once"), work.path().join("twice"));
    cut(&oulad_slice_dir(), &once, None);
    let again = cut(&once, &twice, Some(&work.path().join("again.csv")));
    for table in Table::ALL {
        assert_eq!(
            text(&once, table),
            text(&twice, table),
            "{table} changed on a second cut"
        );
        assert_eq!(
            (again.dropped(table), again.emptied(table)),
            (0, 0),
            "{table}"
        );
    }
    assert_eq!(again.students, 952);
    assert_eq!(again.outcomes_removed, 0);
    let outcomes = fs::read_to_string(work.path().join("again.csv")).unwrap();
    assert_eq!(outcomes.split_terminator("\r\n").count(), 953);
}

/// A small export written by hand: unquoted fields, LF line ends, a quoted field with a comma
/// and a doubled quote in it.
fn tiny_export(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let files = [
        (
            "courses.csv",
            "code_module,code_presentation,module_presentation_length\nAAA,2014B,240\nAAA,2014J,268\n",
        ),
        (
            "assessments.csv",
            "code_module,code_presentation,id_assessment,assessment_type,date,weight\nAAA,2014B,1,TMA,20,50\nAAA,2014J,2,TMA,20,50\nAAA,2014J,3,Exam,,100\n",
        ),
        (
            "vle.csv",
            "id_site,code_module,code_presentation,activity_type,week_from,week_to\n9,AAA,2014J,resource,,\n",
        ),
        (
            "studentInfo.csv",
            "code_module,code_presentation,id_student,gender,region,highest_education,imd_band,age_band,num_of_prev_attempts,studied_credits,disability,final_result\n\
             AAA,2014B,10,M,\"North, \"\"far\"\"\",HE Qualification,10-20,0-35,0,60,N,Pass\n\
             AAA,2014J,11,F,\"North, \"\"far\"\"\",HE Qualification,10-20,0-35,0,60,N,Withdrawn\n\
             AAA,2014J,12,F,Wales,HE Qualification,,0-35,0,60,N,\"Pass\"\n",
        ),
        (
            "studentRegistration.csv",
            "code_module,code_presentation,id_student,date_registration,date_unregistration\nAAA,2014B,10,-5,30\nAAA,2014J,11,-5,30\nAAA,2014J,12,-5,\"20\"\n",
        ),
        (
            "studentAssessment.csv",
            "id_assessment,id_student,date_submitted,is_banked,score\n1,10,21,0,70\n2,11,19,0,70\n2,12,21,0,80\n3,12,260,0,90\n",
        ),
        (
            "studentVle.csv",
            "code_module,code_presentation,id_student,id_site,date,sum_click\nAAA,2014B,10,9,25,1\nAAA,2014J,11,9,20,1\nAAA,2014J,11,9,21,2\nAAA,2014J,12,9,-3,4\n",
        ),
    ];
    for (name, content) in files {
        fs::write(dir.join(name), content).unwrap();
    }
}

#[test]
fn unquoted_lf_files_keep_their_style_and_quoted_commas_survive() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    tiny_export(&src);
    let dst = work.path().join("dst");
    let summary = cut_running(&src, &dst, &["AAA-2014J".to_owned()], 20, None).unwrap();
    let read = |name: &str| fs::read_to_string(dst.join(name)).unwrap();
    assert_eq!(
        read("studentInfo.csv"),
        "code_module,code_presentation,id_student,gender,region,highest_education,imd_band,age_band,num_of_prev_attempts,studied_credits,disability,final_result\n\
         AAA,2014B,10,M,\"North, \"\"far\"\"\",HE Qualification,10-20,0-35,0,60,N,Pass\n\
         AAA,2014J,11,F,\"North, \"\"far\"\"\",HE Qualification,10-20,0-35,0,60,N,\n\
         AAA,2014J,12,F,Wales,HE Qualification,,0-35,0,60,N,\"\"\n"
    );
    assert_eq!(
        read("studentRegistration.csv"),
        "code_module,code_presentation,id_student,date_registration,date_unregistration\nAAA,2014B,10,-5,30\nAAA,2014J,11,-5,\nAAA,2014J,12,-5,\"20\"\n"
    );
    assert_eq!(
        read("studentAssessment.csv"),
        "id_assessment,id_student,date_submitted,is_banked,score\n1,10,21,0,70\n2,11,19,0,70\n"
    );
    assert_eq!(
        read("studentVle.csv"),
        "code_module,code_presentation,id_student,id_site,date,sum_click\nAAA,2014B,10,9,25,1\nAAA,2014J,11,9,20,1\nAAA,2014J,12,9,-3,4\n"
    );
    for name in ["courses.csv", "assessments.csv", "vle.csv"] {
        assert_eq!(read(name), fs::read_to_string(src.join(name)).unwrap());
    }
    assert_eq!(summary.students, 2);
    assert_eq!(summary.dropped(Table::StudentAssessment), 2);
    assert_eq!(summary.dropped(Table::StudentVle), 1);
    assert_eq!(summary.emptied(Table::StudentRegistration), 1);
    assert_eq!(summary.presentations, vec!["AAA-2014J".to_owned()]);
}

/// Nothing at the destination, no outcomes file, no staging folder beside it.
fn assert_nothing_left(work: &Path, dst: &Path, outcomes: &Path) {
    assert!(!dst.exists(), "{} was written", dst.display());
    assert!(!outcomes.exists(), "{} was written", outcomes.display());
    let hidden: Vec<_> = fs::read_dir(work)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.') || n.to_string_lossy().contains("partial"))
        .collect();
    assert!(hidden.is_empty(), "left behind: {hidden:?}");
}

#[test]
fn an_unknown_presentation_names_the_ones_the_export_has() {
    let work = tempfile::tempdir().unwrap();
    let (dst, outcomes) = (work.path().join("dst"), work.path().join("o.csv"));
    let err = cut_running(
        &oulad_slice_dir(),
        &dst,
        &["GGG-2013J".to_owned(), "AAA-2014J".to_owned()],
        DAY,
        Some(&outcomes),
    )
    .unwrap_err();
    assert!(matches!(err, CutError::UnknownPresentation { .. }), "{err}");
    let message = err.to_string();
    for part in ["AAA-2014J", "BBB-2013B", "BBB-2013J", "GGG-2013J"] {
        assert!(message.contains(part), "{message}");
    }
    assert!(!message.starts_with("GGG"), "{message}");
    assert_nothing_left(work.path(), &dst, &outcomes);

    let err = cut_running(
        &oulad_slice_dir(),
        &dst,
        &["GGG2013J".to_owned()],
        DAY,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("MODULE-PRESENTATION"), "{err}");
}

#[test]
fn a_bad_line_is_named_and_leaves_nothing_behind() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    tiny_export(&src);
    let bad = "code_module,code_presentation,id_student,id_site,date,sum_click\nAAA,2014J,11,9,20,1\nAAA,2014J,11,9,day 21,2\n";
    fs::write(src.join("studentVle.csv"), bad).unwrap();
    let (dst, outcomes) = (work.path().join("dst"), work.path().join("o.csv"));
    let err = cut_running(&src, &dst, &["AAA-2014J".to_owned()], 20, Some(&outcomes))
        .unwrap_err()
        .to_string();
    assert!(err.contains("studentVle.csv:3:"), "{err}");
    assert!(err.contains("day 21"), "{err}");
    assert_nothing_left(work.path(), &dst, &outcomes);

    fs::write(
        src.join("studentVle.csv"),
        "code_module,code_presentation,id_student,id_site,date,sum_click\nAAA,2014J,11,9,20\n",
    )
    .unwrap();
    let err = cut_running(&src, &dst, &["AAA-2014J".to_owned()], 20, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("studentVle.csv:2:"), "{err}");
    assert_nothing_left(work.path(), &dst, &outcomes);
}

#[test]
fn the_destination_must_be_new_and_the_outcomes_outside_it() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    tiny_export(&src);
    let taken = work.path().join("taken");
    fs::create_dir(&taken).unwrap();
    fs::write(taken.join("keep.txt"), "mine").unwrap();
    let err = cut_running(&src, &taken, &["AAA-2014J".to_owned()], 20, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(fs::read_to_string(taken.join("keep.txt")).unwrap(), "mine");

    let dst = work.path().join("dst");
    let inside = dst.join("outcomes.csv");
    let err = cut_running(&src, &dst, &["AAA-2014J".to_owned()], 20, Some(&inside))
        .unwrap_err()
        .to_string();
    assert!(err.contains("must not be inside"), "{err}");
    assert!(!dst.exists());

    // An empty folder is taken.
    let empty = work.path().join("empty");
    fs::create_dir(&empty).unwrap();
    cut_running(&src, &empty, &["AAA-2014J".to_owned()], 20, None).unwrap();
    assert!(empty.join("studentVle.csv").is_file());
}
