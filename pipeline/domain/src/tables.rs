//! The canonical LMS tables: the seven tables of the OULAD data model, which every reader
//! (OULAD files, Moodle logs, xAPI statements) produces, with their columns and row types.
//!
//! Days are counted from the start of the presentation (day 0); negative days fall before it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::DomainError;
use crate::ids::{AssessmentId, PresentationId, SiteId, StudentId};

/// One of the seven canonical tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Table {
    /// Module presentations and their length.
    Courses,
    /// Assessments of each presentation: type, due day, weight.
    Assessments,
    /// VLE resources of each presentation and their activity type.
    Vle,
    /// Students' attributes and final result per presentation.
    StudentInfo,
    /// Registration and unregistration days.
    StudentRegistration,
    /// Assessment submissions and scores.
    StudentAssessment,
    /// Daily clicks per student and VLE resource.
    StudentVle,
}

/// The value type of a column as it is written in an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// A whole number (ids, days, counts).
    Integer,
    /// A number that may have a fractional part (weights).
    Decimal,
    /// Text or a category.
    Text,
}

/// One column of a canonical table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Column {
    /// Header name, exactly as in the OULAD files.
    pub name: &'static str,
    /// Value type.
    pub ty: ColumnType,
    /// Whether an empty value (written `""`) is allowed.
    pub nullable: bool,
    /// What the column holds, in words.
    pub meaning: &'static str,
}

const fn col(name: &'static str, ty: ColumnType, nullable: bool, meaning: &'static str) -> Column {
    Column {
        name,
        ty,
        nullable,
        meaning,
    }
}

use ColumnType::{Decimal, Integer, Text};

const MODULE: Column = col("code_module", Text, false, "module code");
const PRESENTATION: Column = col(
    "code_presentation",
    Text,
    false,
    "presentation: start year and month letter",
);
const STUDENT: Column = col("id_student", Integer, false, "student id");

const COURSES: &[Column] = &[
    MODULE,
    PRESENTATION,
    col(
        "module_presentation_length",
        Integer,
        false,
        "length of the presentation in days",
    ),
];
const ASSESSMENTS: &[Column] = &[
    MODULE,
    PRESENTATION,
    col("id_assessment", Integer, false, "assessment id"),
    col(
        "assessment_type",
        Text,
        false,
        "TMA (tutor-marked), CMA (computer-marked) or Exam",
    ),
    col(
        "date",
        Integer,
        true,
        "due day; empty for an exam at the end of the presentation",
    ),
    col("weight", Decimal, false, "weight in percent"),
];
const VLE: &[Column] = &[
    col("id_site", Integer, false, "VLE resource id"),
    MODULE,
    PRESENTATION,
    col(
        "activity_type",
        Text,
        false,
        "kind of resource, e.g. oucontent, forumng, quiz",
    ),
    col(
        "week_from",
        Integer,
        true,
        "week the resource is planned from",
    ),
    col("week_to", Integer, true, "week the resource is planned to"),
];
const STUDENT_INFO: &[Column] = &[
    MODULE,
    PRESENTATION,
    STUDENT,
    col("gender", Text, false, "gender (protected characteristic)"),
    col(
        "region",
        Text,
        false,
        "region of residence (protected characteristic)",
    ),
    col(
        "highest_education",
        Text,
        false,
        "highest education on entry",
    ),
    col(
        "imd_band",
        Text,
        true,
        "deprivation band of the home area (protected characteristic)",
    ),
    col(
        "age_band",
        Text,
        false,
        "age band (protected characteristic)",
    ),
    col(
        "num_of_prev_attempts",
        Integer,
        false,
        "earlier attempts at this module",
    ),
    col(
        "studied_credits",
        Integer,
        false,
        "credits studied in total",
    ),
    col(
        "disability",
        Text,
        false,
        "declared disability Y/N (protected characteristic)",
    ),
    col(
        "final_result",
        Text,
        true,
        "Pass, Distinction, Fail or Withdrawn; empty while the student's presentation is running",
    ),
];
const STUDENT_REGISTRATION: &[Column] = &[
    MODULE,
    PRESENTATION,
    STUDENT,
    col("date_registration", Integer, true, "day of registration"),
    col(
        "date_unregistration",
        Integer,
        true,
        "day of unregistration; empty if never",
    ),
];
const STUDENT_ASSESSMENT: &[Column] = &[
    col("id_assessment", Integer, false, "assessment id"),
    STUDENT,
    col("date_submitted", Integer, false, "day of submission"),
    col(
        "is_banked",
        Integer,
        false,
        "1 if carried over from an earlier presentation",
    ),
    col("score", Decimal, true, "score 0-100; empty if not marked"),
];
const STUDENT_VLE: &[Column] = &[
    MODULE,
    PRESENTATION,
    STUDENT,
    col("id_site", Integer, false, "VLE resource id"),
    col("date", Integer, false, "day of the clicks"),
    col(
        "sum_click",
        Integer,
        false,
        "clicks on that resource that day",
    ),
];

impl Table {
    /// Every table, in the order an export is read (referenced tables first).
    pub const ALL: [Table; 7] = [
        Table::Courses,
        Table::Assessments,
        Table::Vle,
        Table::StudentInfo,
        Table::StudentRegistration,
        Table::StudentAssessment,
        Table::StudentVle,
    ];

    /// File name without extension, as in OULAD (`studentVle` for `studentVle.csv`).
    pub fn file_stem(self) -> &'static str {
        match self {
            Table::Courses => "courses",
            Table::Assessments => "assessments",
            Table::Vle => "vle",
            Table::StudentInfo => "studentInfo",
            Table::StudentRegistration => "studentRegistration",
            Table::StudentAssessment => "studentAssessment",
            Table::StudentVle => "studentVle",
        }
    }

    /// The columns, in file order.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Table::Courses => COURSES,
            Table::Assessments => ASSESSMENTS,
            Table::Vle => VLE,
            Table::StudentInfo => STUDENT_INFO,
            Table::StudentRegistration => STUDENT_REGISTRATION,
            Table::StudentAssessment => STUDENT_ASSESSMENT,
            Table::StudentVle => STUDENT_VLE,
        }
    }

    /// Header names, in file order.
    pub fn header(self) -> impl Iterator<Item = &'static str> {
        self.columns().iter().map(|c| c.name)
    }

    /// The table whose file stem is `stem`.
    pub fn from_file_stem(stem: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.file_stem() == stem)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_stem())
    }
}

/// A student's final result in a presentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FinalResult {
    /// Completed with distinction.
    Distinction,
    /// Passed.
    Pass,
    /// Completed and failed.
    Fail,
    /// Left before the end.
    Withdrawn,
}

impl FinalResult {
    /// Every result.
    pub const ALL: [FinalResult; 4] = [
        FinalResult::Distinction,
        FinalResult::Pass,
        FinalResult::Fail,
        FinalResult::Withdrawn,
    ];

    /// The word used in OULAD files.
    pub fn as_str(self) -> &'static str {
        match self {
            FinalResult::Distinction => "Distinction",
            FinalResult::Pass => "Pass",
            FinalResult::Fail => "Fail",
            FinalResult::Withdrawn => "Withdrawn",
        }
    }
}

impl FromStr for FinalResult {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FinalResult::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                DomainError::invalid(
                    "final result",
                    s,
                    "expected Pass, Distinction, Fail or Withdrawn",
                )
            })
    }
}

impl fmt::Display for FinalResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kind of assessment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AssessmentKind {
    /// Tutor-marked assignment.
    Tma,
    /// Computer-marked assignment (quiz).
    Cma,
    /// Final exam.
    Exam,
}

impl AssessmentKind {
    /// The word used in OULAD files.
    pub fn as_str(self) -> &'static str {
        match self {
            AssessmentKind::Tma => "TMA",
            AssessmentKind::Cma => "CMA",
            AssessmentKind::Exam => "Exam",
        }
    }
}

impl FromStr for AssessmentKind {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "TMA" => Ok(AssessmentKind::Tma),
            "CMA" => Ok(AssessmentKind::Cma),
            "Exam" => Ok(AssessmentKind::Exam),
            _ => Err(DomainError::invalid(
                "assessment type",
                s,
                "expected TMA, CMA or Exam",
            )),
        }
    }
}

/// The deprivation bands of OULAD's `imd_band`, in order from most to least deprived.
pub const IMD_BANDS: [&str; 10] = [
    "0-10%", "10-20%", "20-30%", "30-40%", "40-50%", "50-60%", "60-70%", "70-80%", "80-90%",
    "90-100%",
];

/// The canonical spelling of a deprivation band: the genuine export writes `10-20` without the
/// `%` that every other band has. Returns `None` for a value that is no band.
pub fn normalize_imd_band(value: &str) -> Option<&'static str> {
    IMD_BANDS
        .iter()
        .find(|band| **band == value || band.strip_suffix('%') == Some(value))
        .copied()
}

/// A row of `courses`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Course {
    /// The presentation.
    pub presentation: PresentationId,
    /// Its length in days.
    pub length_days: u16,
}

/// A row of `assessments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// Assessment id.
    pub id: AssessmentId,
    /// The presentation it belongs to.
    pub presentation: PresentationId,
    /// TMA, CMA or exam.
    pub kind: AssessmentKind,
    /// Due day; `None` for an exam held at the end.
    pub due_day: Option<i32>,
    /// Weight in percent.
    pub weight: f64,
}

/// A row of `vle`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VleSite {
    /// Resource id.
    pub id: SiteId,
    /// The presentation it belongs to.
    pub presentation: PresentationId,
    /// Kind of resource as the LMS names it (see [`crate::ActivityFamily`]).
    pub activity_type: String,
    /// Planned from this week.
    pub week_from: Option<u16>,
    /// Planned until this week.
    pub week_to: Option<u16>,
}

/// A row of `studentInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudentInfo {
    /// The presentation.
    pub presentation: PresentationId,
    /// The student.
    pub student: StudentId,
    /// Gender as recorded.
    pub gender: String,
    /// Region of residence.
    pub region: String,
    /// Highest education on entry.
    pub highest_education: String,
    /// Deprivation band, canonical spelling (see [`normalize_imd_band`]).
    pub imd_band: Option<String>,
    /// Age band.
    pub age_band: String,
    /// Earlier attempts at the module.
    pub num_of_prev_attempts: u16,
    /// Credits studied in total.
    pub studied_credits: u16,
    /// Declared disability.
    pub disability: bool,
    /// Outcome; `None` while the presentation is running and the student has none yet.
    pub final_result: Option<FinalResult>,
}

/// A row of `studentRegistration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// The presentation.
    pub presentation: PresentationId,
    /// The student.
    pub student: StudentId,
    /// Day of registration (negative: before the start).
    pub registered_day: Option<i32>,
    /// Day of unregistration, if the student left.
    pub unregistered_day: Option<i32>,
}

/// A row of `studentAssessment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// The assessment.
    pub assessment: AssessmentId,
    /// The student.
    pub student: StudentId,
    /// Day submitted.
    pub day_submitted: i32,
    /// Carried over from an earlier presentation.
    pub banked: bool,
    /// Score 0–100, if marked.
    pub score: Option<f64>,
}

/// A row of `studentVle`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClickRecord {
    /// The presentation.
    pub presentation: PresentationId,
    /// The student.
    pub student: StudentId,
    /// The resource.
    pub site: SiteId,
    /// Day of the clicks.
    pub day: i32,
    /// Number of clicks.
    pub clicks: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_match_the_oulad_files() {
        let header = |t: Table| t.header().collect::<Vec<_>>().join(",");
        assert_eq!(
            header(Table::Courses),
            "code_module,code_presentation,module_presentation_length"
        );
        assert_eq!(
            header(Table::StudentVle),
            "code_module,code_presentation,id_student,id_site,date,sum_click"
        );
        assert_eq!(
            header(Table::StudentAssessment),
            "id_assessment,id_student,date_submitted,is_banked,score"
        );
        assert_eq!(
            Table::from_file_stem("studentInfo"),
            Some(Table::StudentInfo)
        );
        assert_eq!(Table::from_file_stem("studentinfo"), None);
    }

    #[test]
    fn imd_band_quirk_is_normalised() {
        assert_eq!(normalize_imd_band("10-20"), Some("10-20%"));
        assert_eq!(normalize_imd_band("90-100%"), Some("90-100%"));
        assert_eq!(normalize_imd_band("100%"), None);
        assert_eq!(normalize_imd_band(""), None);
    }

    #[test]
    fn final_results_and_assessment_kinds_parse_their_file_words() {
        for r in FinalResult::ALL {
            assert_eq!(r.as_str().parse::<FinalResult>().unwrap(), r);
        }
        assert!("pass".parse::<FinalResult>().is_err());
        assert_eq!(
            "Exam".parse::<AssessmentKind>().unwrap(),
            AssessmentKind::Exam
        );
        assert!("exam".parse::<AssessmentKind>().is_err());
    }
}
