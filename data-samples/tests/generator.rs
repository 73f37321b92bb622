//! The generator against the genuine OULAD slice: same files, headers, quoting, line ends and
//! value types; deterministic per seed; nothing left behind when it fails; the latest presentations
//! written as a running term.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use lodestar_domain::{ColumnType, Table};
use lodestar_samples::{GeneratorConfig, cut_running, generate, oulad_slice_dir};

fn table_path(dir: &Path, table: Table) -> PathBuf {
    let plain = dir.join(format!("{}.csv", table.file_stem()));
    if plain.exists() {
        plain
    } else {
        dir.join(format!("{}.csv.gz", table.file_stem()))
    }
}

fn read_table(dir: &Path, table: Table) -> Vec<u8> {
    let path = table_path(dir, table);
    let raw = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        raw
    }
}

/// Splits a line written the OULAD way (every field quoted, no quotes or commas inside).
fn fields(line: &str) -> Vec<&str> {
    let inner = line
        .strip_prefix('"')
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not fully quoted: {line:?}"));
    inner.split("\",\"").collect()
}

#[derive(Debug, Default, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Kind {
    #[default]
    Empty,
    Integer,
    Decimal,
    Text,
}

fn kind_of(value: &str) -> Kind {
    if value.is_empty() {
        Kind::Empty
    } else if value.parse::<i64>().is_ok() {
        Kind::Integer
    } else if value.parse::<f64>().is_ok() {
        Kind::Decimal
    } else {
        Kind::Text
    }
}

/// For each column: the header and the set of value kinds seen. Also checks CRLF on every line.
fn profile(
    dir: &Path,
    table: Table,
) -> (Vec<String>, Vec<std::collections::BTreeSet<Kind>>, usize) {
    let bytes = read_table(dir, table);
    let text = std::str::from_utf8(&bytes).expect("UTF-8");
    assert!(
        text.ends_with("\r\n"),
        "{table}: last line must end in CRLF"
    );
    let mut lines = text.split_terminator("\r\n");
    let header: Vec<String> = fields(lines.next().expect("header"))
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut kinds = vec![std::collections::BTreeSet::new(); header.len()];
    let mut rows = 0;
    for line in lines {
        assert!(
            !line.contains('\n') && !line.contains('\r'),
            "{table}: bare line end in {line:?}"
        );
        let f = fields(line);
        assert_eq!(f.len(), header.len(), "{table}: {line:?}");
        for (set, value) in kinds.iter_mut().zip(f) {
            set.insert(kind_of(value));
        }
        rows += 1;
    }
    (header, kinds, rows)
}

/// Whether the kinds seen fit the canonical column type.
fn fits(ty: ColumnType, nullable: bool, kinds: &std::collections::BTreeSet<Kind>) -> bool {
    kinds.iter().all(|k| match (k, ty) {
        (Kind::Empty, _) => nullable,
        (Kind::Integer, ColumnType::Integer | ColumnType::Decimal) => true,
        (Kind::Decimal, ColumnType::Decimal) => true,
        (Kind::Integer | Kind::Decimal | Kind::Text, ColumnType::Text) => true,
        _ => false,
    })
}

fn small(seed: u64) -> GeneratorConfig {
    GeneratorConfig {
        students: 300,
        presentations: 3,
        seed,
        gzip_clicks: false,
        running_day: None,
    }
}

#[test]
fn generated_export_has_the_genuine_files_headers_and_value_types() {
    let out = tempfile::tempdir().unwrap();
    let summary = generate(&small(7), out.path(), &mut |_| {}).unwrap();
    let genuine = oulad_slice_dir();
    for table in Table::ALL {
        let (gen_header, gen_kinds, gen_rows) = profile(out.path(), table);
        let (real_header, real_kinds, _) = profile(&genuine, table);
        assert_eq!(
            gen_header, real_header,
            "{table}: header differs from the genuine file"
        );
        assert_eq!(
            gen_header,
            table.header().collect::<Vec<_>>(),
            "{table}: header differs from the domain schema"
        );
        assert_eq!(
            summary.rows[&table] as usize, gen_rows,
            "{table}: summary miscounts rows"
        );
        assert!(gen_rows > 0, "{table} is empty");
        for ((column, generated), real) in table.columns().iter().zip(&gen_kinds).zip(&real_kinds) {
            assert!(
                fits(column.ty, column.nullable, real),
                "genuine {table}.{}: {real:?}",
                column.name
            );
            assert!(
                fits(column.ty, column.nullable, generated),
                "generated {table}.{}: {generated:?}",
                column.name
            );
            // A column that holds numbers in the genuine file holds numbers here, not text.
            let numeric = |k: &std::collections::BTreeSet<Kind>| {
                k.iter().any(|k| matches!(k, Kind::Integer | Kind::Decimal))
            };
            let textual = |k: &std::collections::BTreeSet<Kind>| k.contains(&Kind::Text);
            assert_eq!(
                numeric(generated),
                numeric(real),
                "{table}.{}: {generated:?} vs genuine {real:?}",
                column.name
            );
            assert_eq!(
                textual(generated),
                textual(real),
                "{table}.{}: {generated:?} vs genuine {real:?}",
                column.name
            );
        }
    }
}

#[test]
fn categories_are_drawn_from_the_genuine_vocabulary() {
    let out = tempfile::tempdir().unwrap();
    generate(&small(11), out.path(), &mut |_| {}).unwrap();
    let vocabulary = |dir: &Path, column: usize| {
        let bytes = read_table(dir, Table::StudentInfo);
        let text = String::from_utf8(bytes).unwrap();
        text.split_terminator("\r\n")
            .skip(1)
            .map(|l| fields(l)[column].to_owned())
            .collect::<std::collections::BTreeSet<_>>()
    };
    // gender, highest_education, imd_band, age_band, disability, final_result
    for column in [3, 5, 6, 7, 10, 11] {
        let generated = vocabulary(out.path(), column);
        let genuine = vocabulary(&oulad_slice_dir(), column);
        assert!(
            generated.is_subset(&genuine),
            "column {column}: {generated:?} not within {genuine:?}"
        );
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    generate(&small(5), a.path(), &mut |_| {}).unwrap();
    generate(&small(5), b.path(), &mut |_| {}).unwrap();
    generate(&small(6), c.path(), &mut |_| {}).unwrap();
    for table in Table::ALL {
        assert_eq!(
            read_table(a.path(), table),
            read_table(b.path(), table),
            "{table} differs for one seed"
        );
    }
    assert_ne!(
        read_table(a.path(), Table::StudentVle),
        read_table(c.path(), Table::StudentVle)
    );
}

#[test]
fn gzip_writes_the_same_clicks_compressed_and_replaces_the_plain_file() {
    let out = tempfile::tempdir().unwrap();
    generate(&small(3), out.path(), &mut |_| {}).unwrap();
    let plain = read_table(out.path(), Table::StudentVle);
    let config = GeneratorConfig {
        gzip_clicks: true,
        ..small(3)
    };
    generate(&config, out.path(), &mut |_| {}).unwrap();
    assert!(
        !out.path().join("studentVle.csv").exists(),
        "both spellings of the click table remain"
    );
    assert_eq!(read_table(out.path(), Table::StudentVle), plain);
}

#[test]
fn outcomes_depend_on_early_activity() {
    // The share of at-risk students (Fail or Withdrawn) must be clearly higher among the least
    // active third in the first five weeks than among the most active third.
    let out = tempfile::tempdir().unwrap();
    let config = GeneratorConfig {
        students: 1500,
        presentations: 2,
        seed: 1,
        gzip_clicks: false,
        running_day: None,
    };
    generate(&config, out.path(), &mut |_| {}).unwrap();
    let mut clicks: BTreeMap<String, i64> = BTreeMap::new();
    let file = fs::File::open(out.path().join("studentVle.csv")).unwrap();
    for line in BufReader::new(file).lines().skip(1) {
        let line = line.unwrap();
        let f = fields(line.trim_end());
        if f[4].parse::<i64>().unwrap() <= 34 {
            *clicks.entry(f[2].to_owned()).or_default() += f[5].parse::<i64>().unwrap();
        }
    }
    let info = String::from_utf8(read_table(out.path(), Table::StudentInfo)).unwrap();
    let mut students: Vec<(i64, bool)> = info
        .split_terminator("\r\n")
        .skip(1)
        .map(|l| {
            let f = fields(l);
            (
                clicks.get(f[2]).copied().unwrap_or(0),
                matches!(f[11], "Fail" | "Withdrawn"),
            )
        })
        .collect();
    students.sort();
    let third = students.len() / 3;
    let rate = |s: &[(i64, bool)]| s.iter().filter(|x| x.1).count() as f64 / s.len() as f64;
    let (low, high) = (rate(&students[..third]), rate(&students[2 * third..]));
    assert!(
        low > high + 0.25,
        "at-risk rate: least active {low:.2}, most active {high:.2}"
    );
}

#[test]
fn a_failed_run_leaves_nothing_behind() {
    let out = tempfile::tempdir().unwrap();
    fs::create_dir(out.path().join("studentVle.csv")).unwrap();
    let err = generate(&small(1), out.path(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("studentVle.csv"), "{err}");
    let left: Vec<_> = fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("studentVle.csv")],
        "{left:?}"
    );

    let bad = GeneratorConfig {
        students: 2,
        presentations: 3,
        ..small(1)
    };
    let err = generate(&bad, out.path(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("--presentations"), "{err}");
}

#[test]
fn running_day_writes_the_latest_presentations_as_the_cut_of_the_finished_export() {
    let work = tempfile::tempdir().unwrap();
    let (finished, running, again) = (
        work.path().join("finished"),
        work.path().join("running"),
        work.path().join("again"),
    );
    let config = GeneratorConfig {
        running_day: Some(60),
        ..small(8)
    };
    generate(&small(8), &finished, &mut |_| {}).unwrap();
    let summary = generate(&config, &running, &mut |_| {}).unwrap();
    generate(&config, &again, &mut |_| {}).unwrap();

    // Three presentations: AAA-2013B, AAA-2013J, BBB-2013B; the latest code is 2013J.
    let cut = work.path().join("cut");
    let cut_summary = cut_running(&finished, &cut, &["AAA-2013J".to_owned()], 60, None).unwrap();
    assert!(cut_summary.dropped(Table::StudentVle) > 0);
    for table in Table::ALL {
        let bytes = read_table(&running, table);
        assert_eq!(
            bytes,
            read_table(&cut, table),
            "{table}: not the cut of the finished export"
        );
        assert_eq!(
            bytes,
            read_table(&again, table),
            "{table} differs for one seed"
        );
        let rows = String::from_utf8(bytes)
            .unwrap()
            .split_terminator("\r\n")
            .count()
            - 1;
        assert_eq!(
            summary.rows[&table] as usize, rows,
            "{table}: summary miscounts rows"
        );
    }

    // Read directly: the running presentation has no outcome and nothing after day 60; the
    // finished ones keep both.
    let info = String::from_utf8(read_table(&running, Table::StudentInfo)).unwrap();
    let mut results: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for line in info.split_terminator("\r\n").skip(1) {
        let f = fields(line);
        let e = results.entry(format!("{}-{}", f[0], f[1])).or_default();
        e.0 += 1;
        e.1 += usize::from(!f[11].is_empty());
    }
    assert_eq!(results["AAA-2013J"], (100, 0), "{results:?}");
    assert_eq!(results["AAA-2013B"], (100, 100), "{results:?}");
    assert_eq!(results["BBB-2013B"], (100, 100), "{results:?}");
    let clicks = String::from_utf8(read_table(&running, Table::StudentVle)).unwrap();
    let mut latest: BTreeMap<String, i64> = BTreeMap::new();
    for line in clicks.split_terminator("\r\n").skip(1) {
        let f = fields(line);
        let day: i64 = f[4].parse().unwrap();
        let e = latest
            .entry(format!("{}-{}", f[0], f[1]))
            .or_insert(i64::MIN);
        *e = (*e).max(day);
    }
    assert!(
        latest["AAA-2013J"] <= 60 && latest["AAA-2013J"] > 50,
        "{latest:?}"
    );
    assert!(latest["AAA-2013B"] > 200, "{latest:?}");
    let registrations =
        String::from_utf8(read_table(&running, Table::StudentRegistration)).unwrap();
    for line in registrations.split_terminator("\r\n").skip(1) {
        let f = fields(line);
        if f[1] == "2013J" && !f[4].is_empty() {
            assert!(f[4].parse::<i32>().unwrap() <= 60, "{line}");
        }
    }
}
