//! Identifiers: students, modules, course presentations, assessments and VLE sites.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::DomainError;

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.trim()
                    .parse()
                    .map($name)
                    .map_err(|_| DomainError::invalid($kind, s, "expected a non-negative integer"))
            }
        }
    };
}

numeric_id!(
    /// A student as the LMS numbers them (`id_student` in OULAD).
    StudentId,
    "student id"
);
numeric_id!(
    /// An assessment of one presentation (`id_assessment`).
    AssessmentId,
    "assessment id"
);
numeric_id!(
    /// A VLE resource of one presentation (`id_site`).
    SiteId,
    "site id"
);

/// A module (course) code, e.g. `AAA` in OULAD or `MATH101` elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModuleCode(String);

impl ModuleCode {
    /// Longest code accepted.
    pub const MAX_LEN: usize = 32;

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ModuleCode {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const RULE: &str = "1 to 32 ASCII letters, digits, '_' or '.'";
        if s.is_empty()
            || s.len() > Self::MAX_LEN
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            return Err(DomainError::invalid("module code", s, RULE));
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for ModuleCode {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ModuleCode> for String {
    fn from(m: ModuleCode) -> Self {
        m.0
    }
}

impl fmt::Display for ModuleCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// When a presentation of a module starts, written as the Open University does: the year and a
/// letter for the starting month (`A` = January … `L` = December), so `2013B` starts in February
/// 2013 and `2013J` in October 2013. Ordering is chronological, which temporal evaluation relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PresentationCode {
    year: u16,
    month: u8,
}

impl PresentationCode {
    /// A code for the presentation starting in `month` (1–12) of `year` (1900–9999).
    pub fn new(year: u16, month: u8) -> Result<Self, DomainError> {
        if !(1900..=9999).contains(&year) || !(1..=12).contains(&month) {
            return Err(DomainError::InvalidValue {
                kind: "presentation code",
                value: format!("{year}/{month}"),
                reason: "year must be 1900-9999 and month 1-12",
            });
        }
        Ok(Self { year, month })
    }

    /// Calendar year the presentation starts in.
    pub fn year(self) -> u16 {
        self.year
    }

    /// Month (1–12) the presentation starts in.
    pub fn start_month(self) -> u8 {
        self.month
    }
}

impl FromStr for PresentationCode {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const RULE: &str = "a four-digit year and a month letter A-L, e.g. 2013J";
        let bytes = s.as_bytes();
        if bytes.len() != 5 || !bytes[..4].iter().all(u8::is_ascii_digit) {
            return Err(DomainError::invalid("presentation code", s, RULE));
        }
        let year: u16 = s[..4]
            .parse()
            .map_err(|_| DomainError::invalid("presentation code", s, RULE))?;
        let letter = bytes[4];
        if !(b'A'..=b'L').contains(&letter) {
            return Err(DomainError::invalid("presentation code", s, RULE));
        }
        Self::new(year, letter - b'A' + 1)
            .map_err(|_| DomainError::invalid("presentation code", s, RULE))
    }
}

impl TryFrom<String> for PresentationCode {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PresentationCode> for String {
    fn from(p: PresentationCode) -> Self {
        p.to_string()
    }
}

impl fmt::Display for PresentationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}{}", self.year, char::from(b'A' + self.month - 1))
    }
}

/// One run of a module: `AAA` presented from `2013J`. Written `AAA-2013J`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PresentationId {
    /// The module (`code_module`).
    pub module: ModuleCode,
    /// When it ran (`code_presentation`).
    pub presentation: PresentationCode,
}

impl PresentationId {
    /// Both parts, already parsed.
    pub fn new(module: ModuleCode, presentation: PresentationCode) -> Self {
        Self {
            module,
            presentation,
        }
    }

    /// Parses the two OULAD columns `code_module` and `code_presentation`.
    pub fn parse(module: &str, presentation: &str) -> Result<Self, DomainError> {
        Ok(Self::new(module.parse()?, presentation.parse()?))
    }
}

impl fmt::Display for PresentationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.module, self.presentation)
    }
}

impl FromStr for PresentationId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (module, presentation) = s.rsplit_once('-').ok_or_else(|| {
            DomainError::invalid(
                "presentation id",
                s,
                "expected MODULE-PRESENTATION, e.g. AAA-2013J",
            )
        })?;
        Self::parse(module, presentation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presentation_codes_round_trip_and_order_chronologically() {
        let b: PresentationCode = "2013B".parse().unwrap();
        let j: PresentationCode = "2013J".parse().unwrap();
        let next_b: PresentationCode = "2014B".parse().unwrap();
        assert_eq!((b.year(), b.start_month()), (2013, 2));
        assert_eq!(j.start_month(), 10);
        assert!(b < j && j < next_b);
        assert_eq!(j.to_string(), "2013J");
        for bad in ["2013", "2013M", "13J", "2013j", "2013JJ", "abcdJ", ""] {
            assert!(bad.parse::<PresentationCode>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn presentation_id_parses_display_form_and_columns() {
        let id: PresentationId = "AAA-2013J".parse().unwrap();
        assert_eq!(id, PresentationId::parse("AAA", "2013J").unwrap());
        assert_eq!(id.to_string(), "AAA-2013J");
        let err = "AAA2013J".parse::<PresentationId>().unwrap_err();
        assert!(err.to_string().contains("MODULE-PRESENTATION"), "{err}");
    }

    #[test]
    fn module_codes_are_checked() {
        assert!("MATH101".parse::<ModuleCode>().is_ok());
        for bad in ["", "A B", "AAA-1", &"X".repeat(33)] {
            assert!(bad.parse::<ModuleCode>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn numeric_ids_name_themselves_in_errors() {
        assert_eq!(" 28400".parse::<StudentId>().unwrap(), StudentId(28400));
        let err = "-3".parse::<StudentId>().unwrap_err().to_string();
        assert!(err.contains("student id") && err.contains("-3"), "{err}");
    }

    #[test]
    fn ids_serialise_as_plain_values() {
        let id = PresentationId::parse("BBB", "2013B").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, r#"{"module":"BBB","presentation":"2013B"}"#);
        assert_eq!(serde_json::from_str::<PresentationId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<PresentationCode>(r#""2013Z""#).is_err());
    }
}
