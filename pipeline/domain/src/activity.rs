//! VLE activity types grouped into the families that features count clicks by.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A family of VLE activity: what kind of engagement a click is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityFamily {
    /// The course home page: visiting, not yet studying.
    Homepage,
    /// Study material: pages, resources, links, structured content.
    Content,
    /// Discussion and collaboration: forums, wikis, live sessions.
    Forum,
    /// Practice and self-assessment: quizzes, questionnaires.
    Quiz,
    /// Anything the mapping does not know.
    Other,
}

/// Every activity type whose family is known (the 20 types of the genuine OULAD `vle` table);
/// any other type is [`ActivityFamily::Other`].
pub const KNOWN_ACTIVITY_TYPES: &[(&str, ActivityFamily)] = {
    use ActivityFamily::{Content, Forum, Homepage, Quiz};
    &[
        ("homepage", Homepage),
        ("oucontent", Content),
        ("resource", Content),
        ("page", Content),
        ("subpage", Content),
        ("url", Content),
        ("folder", Content),
        ("dualpane", Content),
        ("htmlactivity", Content),
        ("sharedsubpage", Content),
        ("dataplus", Content),
        ("glossary", Content),
        ("forumng", Forum),
        ("ouwiki", Forum),
        ("oucollaborate", Forum),
        ("ouelluminate", Forum),
        ("quiz", Quiz),
        ("externalquiz", Quiz),
        ("questionnaire", Quiz),
        ("repeatactivity", Quiz),
    ]
};

impl ActivityFamily {
    /// Every family, in feature-column order.
    pub const ALL: [ActivityFamily; 5] = [
        ActivityFamily::Homepage,
        ActivityFamily::Content,
        ActivityFamily::Forum,
        ActivityFamily::Quiz,
        ActivityFamily::Other,
    ];

    /// The family of an OULAD `activity_type` (also used for Moodle components mapped to the
    /// same names). Unknown types are [`ActivityFamily::Other`], never an error.
    pub fn of(activity_type: &str) -> ActivityFamily {
        KNOWN_ACTIVITY_TYPES
            .iter()
            .find(|(name, _)| *name == activity_type)
            .map_or(ActivityFamily::Other, |(_, family)| *family)
    }

    /// Lower-case name used in feature column names.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityFamily::Homepage => "homepage",
            ActivityFamily::Content => "content",
            ActivityFamily::Forum => "forum",
            ActivityFamily::Quiz => "quiz",
            ActivityFamily::Other => "other",
        }
    }
}

impl fmt::Display for ActivityFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_oulad_activity_type_has_a_known_family() {
        // The 20 activity types of the genuine OULAD `vle` table.
        let oulad = [
            "resource",
            "subpage",
            "url",
            "oucontent",
            "forumng",
            "page",
            "quiz",
            "ouwiki",
            "questionnaire",
            "oucollaborate",
            "ouelluminate",
            "dataplus",
            "externalquiz",
            "dualpane",
            "homepage",
            "glossary",
            "repeatactivity",
            "sharedsubpage",
            "folder",
            "htmlactivity",
        ];
        for t in oulad {
            assert_ne!(ActivityFamily::of(t), ActivityFamily::Other, "{t}");
        }
        assert_eq!(ActivityFamily::of("forumng"), ActivityFamily::Forum);
        assert_eq!(ActivityFamily::of("something-new"), ActivityFamily::Other);
    }
}
