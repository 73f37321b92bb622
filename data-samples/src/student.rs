//! The generative process behind a synthetic export: what a presentation looks like, and how one
//! student registers, engages, submits, possibly withdraws, and ends with a result.
//!
//! Each student has a latent *ability* (prior education, earlier attempts, deprivation and the
//! presentation's difficulty shift it) and a weekly *engagement* that starts correlated with
//! ability, drifts down for weaker students, and wanders week to week. Engagement drives daily
//! VLE activity (more active days, more resources, more clicks, bursts before deadlines) and the
//! chance of submitting on time; ability and engagement drive scores; low engagement raises the
//! weekly hazard of withdrawing, and activity fades over the three weeks before a withdrawal.
//! The result follows the OU's rule: withdrawn if unregistered; otherwise pass when both the
//! weighted continuous assessment and the exam reach 40, distinction when their mean reaches 85,
//! fail otherwise (including not sitting the exam). So outcomes depend on activity, submissions
//! and scores the way real ones do, and a model trained on the clicks learns something real.

use std::io;

use lodestar_domain::tables::{AssessmentKind, FinalResult, IMD_BANDS};
use lodestar_domain::{ActivityFamily, PresentationCode};
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Exp1, StandardNormal};

use crate::csv_out::CsvOut;

/// SplitMix64 over three words: decorrelated seeds for presentations and students.
pub(crate) fn mix(seed: u64, stream: u64, index: u64) -> u64 {
    let mut z = seed ^ stream.rotate_left(32) ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for _ in 0..2 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
    }
    z
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng.random::<f64>() < p
}

/// A Poisson draw by multiplication of uniforms; the means used here are small (< 10).
fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> u32 {
    let limit = (-mean.min(30.0)).exp();
    let mut product = rng.random::<f64>();
    let mut k = 0;
    while product > limit {
        product *= rng.random::<f64>();
        k += 1;
    }
    k
}

/// Picks from `(value, weight)` pairs.
fn pick<'a, T>(rng: &mut ChaCha8Rng, table: &'a [(T, f64)]) -> &'a T {
    let total: f64 = table.iter().map(|(_, w)| w).sum();
    let mut x = rng.random::<f64>() * total;
    for (value, weight) in table {
        if x < *weight {
            return value;
        }
        x -= weight;
    }
    &table[table.len() - 1].0
}

// Marginal frequencies of the genuine 2013 OULAD students.
const REGIONS: &[(&str, f64)] = &[
    ("East Anglian Region", 1465.0),
    ("London Region", 1324.0),
    ("Scotland", 1284.0),
    ("South Region", 1284.0),
    ("North Western Region", 1210.0),
    ("West Midlands Region", 1104.0),
    ("South West Region", 1028.0),
    ("East Midlands Region", 943.0),
    ("Wales", 888.0),
    ("South East Region", 867.0),
    ("Yorkshire Region", 864.0),
    ("North Region", 737.0),
    ("Ireland", 526.0),
];
/// (label, ordinal from no formal qualifications 0 to postgraduate 4), frequency.
const EDUCATION: &[((&str, f64), f64)] = &[
    (("A Level or Equivalent", 2.0), 5797.0),
    (("Lower Than A Level", 1.0), 5672.0),
    (("HE Qualification", 3.0), 1827.0),
    (("No Formal quals", 0.0), 137.0),
    (("Post Graduate Qualification", 4.0), 96.0),
];
const AGE_BANDS: &[(&str, f64)] = &[("0-35", 9478.0), ("35-55", 3968.0), ("55<=", 83.0)];
const PREVIOUS_ATTEMPTS: &[(u32, f64)] = &[
    (0, 11622.0),
    (1, 1504.0),
    (2, 319.0),
    (3, 62.0),
    (4, 15.0),
    (5, 6.0),
    (6, 1.0),
];
const CREDITS: &[(u32, f64)] = &[
    (60, 7264.0),
    (120, 2753.0),
    (90, 1169.0),
    (30, 1091.0),
    (180, 403.0),
    (150, 317.0),
    (240, 94.0),
    (210, 78.0),
    (75, 67.0),
    (70, 61.0),
];
/// VLE activity types of the genuine `vle` table other than the home page, by frequency.
const ACTIVITY_TYPES: &[(&str, f64)] = &[
    ("resource", 1321.0),
    ("subpage", 511.0),
    ("url", 448.0),
    ("oucontent", 378.0),
    ("forumng", 97.0),
    ("page", 57.0),
    ("quiz", 43.0),
    ("ouwiki", 29.0),
    ("questionnaire", 28.0),
    ("oucollaborate", 25.0),
    ("ouelluminate", 21.0),
    ("dataplus", 14.0),
    ("externalquiz", 14.0),
    ("dualpane", 13.0),
    ("glossary", 9.0),
    ("repeatactivity", 3.0),
    ("sharedsubpage", 2.0),
    ("folder", 1.0),
];
/// TMA weights by number of TMAs, in the style of the genuine modules (halves included).
const TMA_WEIGHTS: [&[f64]; 4] = [
    &[17.5, 32.5, 50.0],
    &[12.5, 25.0, 25.0, 37.5],
    &[10.0, 17.5, 22.5, 25.0, 25.0],
    &[7.5, 17.5, 17.5, 17.5, 17.5, 22.5],
];
/// Share of a day's VLE rows going to each family (home page, content, forum, quiz).
const FAMILY_SHARE: [f64; 4] = [0.22, 0.58, 0.12, 0.08];

pub(crate) struct PlannedAssessment {
    id: u64,
    kind: AssessmentKind,
    /// Due day as written in the file (`None`: exam at the end).
    written_due: Option<i32>,
    /// Day it actually happens.
    day: i32,
    weight: f64,
}

struct Site {
    id: u64,
    activity_type: &'static str,
    weeks: Option<(u32, u32)>,
}

/// One module presentation: its length, assessment plan and VLE resources.
pub(crate) struct PresentationPlan {
    module: String,
    code: &'static str,
    length: i32,
    difficulty: f64,
    assessments: Vec<PlannedAssessment>,
    /// Whether exam results appear in `studentAssessment` (only some genuine modules export them).
    exam_rows: bool,
    sites: Vec<Site>,
    /// Site ids by family: home page, content, forum, quiz.
    sites_by_family: [Vec<u64>; 4],
    family_pick: WeightedIndex<f64>,
}

fn module_code(index: u32) -> String {
    if index < 26 {
        let c = char::from(b'A' + index as u8);
        [c, c, c].iter().collect()
    } else {
        format!("M{index:03}")
    }
}

impl PresentationPlan {
    pub(crate) fn new(seed: u64, index: u32) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, 0x00c0_a7e5, u64::from(index)));
        let february = index.is_multiple_of(2);
        let length = if february {
            240 + rng.random_range(0..=1)
        } else {
            261 + rng.random_range(0..=8)
        };
        let difficulty = 0.25 * normal(&mut rng);

        let first_id = 1_000 + u64::from(index) * 20;
        let mut assessments = Vec::new();
        let n_tma = rng.random_range(3..=6usize);
        for (i, &weight) in TMA_WEIGHTS[n_tma - 3].iter().enumerate() {
            let due = ((i as f64 + 1.0) * f64::from(length - 40) / (n_tma as f64 + 0.5)) as i32
                + rng.random_range(-3..=3);
            assessments.push((AssessmentKind::Tma, Some(due.max(12)), weight));
        }
        let n_cma = if chance(&mut rng, 0.4) {
            0
        } else {
            rng.random_range(1..=7usize)
        };
        for i in 0..n_cma {
            let due = 10 + ((i as f64 + 0.5) * f64::from(length - 30) / n_cma as f64) as i32;
            assessments.push((AssessmentKind::Cma, Some(due), 0.0));
        }
        let exam_day = length - rng.random_range(0..=5);
        let exam_written = if chance(&mut rng, 0.5) {
            None
        } else {
            Some(exam_day)
        };
        assessments.push((AssessmentKind::Exam, exam_written, 100.0));
        assessments
            .sort_by_key(|(kind, due, _)| (due.unwrap_or(exam_day), *kind == AssessmentKind::Exam));
        let assessments = assessments
            .into_iter()
            .enumerate()
            .map(|(i, (kind, written_due, weight))| PlannedAssessment {
                id: first_id + i as u64,
                kind,
                written_due,
                day: written_due.unwrap_or(exam_day),
                weight,
            })
            .collect();

        let weeks = (length / 7) as u32;
        let n_sites = rng.random_range(150..=400usize);
        let mut sites = Vec::with_capacity(n_sites);
        let mut sites_by_family: [Vec<u64>; 4] = Default::default();
        for i in 0..n_sites {
            let activity_type = match i {
                0 => "homepage",
                1 => "oucontent",
                _ => *pick(&mut rng, ACTIVITY_TYPES),
            };
            let id = 500_000 + u64::from(index) * 1_000 + i as u64;
            let planned = chance(&mut rng, 0.14).then(|| {
                let from = rng.random_range(1..=weeks);
                (from, from + rng.random_range(0..=2))
            });
            let slot = match ActivityFamily::of(activity_type) {
                ActivityFamily::Homepage => 0,
                ActivityFamily::Forum => 2,
                ActivityFamily::Quiz => 3,
                ActivityFamily::Content | ActivityFamily::Other => 1,
            };
            sites_by_family[slot].push(id);
            sites.push(Site {
                id,
                activity_type,
                weeks: planned,
            });
        }
        let shares = FAMILY_SHARE
            .iter()
            .zip(&sites_by_family)
            .map(|(share, ids)| if ids.is_empty() { 0.0 } else { *share });
        let family_pick = WeightedIndex::new(shares).expect("home page and content always exist");

        Self {
            module: module_code(index / 2),
            code: if february { "2013B" } else { "2013J" },
            length,
            difficulty,
            assessments,
            exam_rows: chance(&mut rng, 0.5),
            sites,
            sites_by_family,
            family_pick,
        }
    }

    /// When it starts (`2013B` or `2013J`).
    pub(crate) fn code(&self) -> PresentationCode {
        self.code.parse().expect("the plan's codes are valid")
    }

    fn keys(&self, out: &mut CsvOut) {
        out.text(&self.module);
        out.text(self.code);
    }

    pub(crate) fn write_course(&self, out: &mut CsvOut) -> io::Result<()> {
        self.keys(out);
        out.int(i64::from(self.length));
        out.end_row()
    }

    pub(crate) fn write_assessments(&self, out: &mut CsvOut) -> io::Result<()> {
        for a in &self.assessments {
            self.keys(out);
            out.int(a.id as i64);
            out.text(a.kind.as_str());
            out.opt_int(a.written_due.map(i64::from));
            if a.weight.fract() == 0.0 {
                out.int(a.weight as i64);
            } else {
                out.text(&a.weight.to_string());
            }
            out.end_row()?;
        }
        Ok(())
    }

    pub(crate) fn write_vle(&self, out: &mut CsvOut) -> io::Result<()> {
        for s in &self.sites {
            out.int(s.id as i64);
            self.keys(out);
            out.text(s.activity_type);
            out.opt_int(s.weeks.map(|w| i64::from(w.0)));
            out.opt_int(s.weeks.map(|w| i64::from(w.1)));
            out.end_row()?;
        }
        Ok(())
    }

    /// Whether a TMA or CMA is due within the next five days of `day`.
    fn deadline_near(&self, day: i32) -> bool {
        self.assessments
            .iter()
            .any(|a| a.kind != AssessmentKind::Exam && (0..=5).contains(&(a.day - day)))
    }
}

/// The four per-student tables.
pub(crate) struct Sinks<'a> {
    pub(crate) info: &'a mut CsvOut,
    pub(crate) registration: &'a mut CsvOut,
    pub(crate) submissions: &'a mut CsvOut,
    pub(crate) clicks: &'a mut CsvOut,
}

/// First simulated day: activity starts at most this many days before the presentation.
const EARLIEST_ACTIVITY: i32 = -18;

/// Simulates one student of `plan` and writes their rows. With `running` (the as-of day of a
/// presentation under way), the outcome is left empty and no click, submission or unregistration
/// dated after that day is written; every random draw is made as for a finished presentation, so
/// the rows kept are exactly the finished export's rows that a cut on that day keeps.
pub(crate) fn simulate(
    plan: &PresentationPlan,
    running: Option<i32>,
    id: u64,
    rng: &mut ChaCha8Rng,
    out: &mut Sinks<'_>,
) -> io::Result<()> {
    // Who they are.
    let gender = if chance(rng, 0.513) { "M" } else { "F" };
    let region = *pick(rng, REGIONS);
    let (education, education_level) = *pick(rng, EDUCATION);
    let imd = (!chance(rng, 0.033)).then(|| rng.random_range(0..IMD_BANDS.len()));
    let age = *pick(rng, AGE_BANDS);
    let previous = *pick(rng, PREVIOUS_ATTEMPTS);
    let credits = *pick(rng, CREDITS);
    let disability = chance(rng, 0.097);

    let ability = 0.9 * normal(rng) + 0.2 * (education_level - 1.5)
        - 0.3 * f64::from(previous.min(2))
        + imd.map_or(0.0, |d| 0.05 * (d as f64 - 4.5))
        + if age == "0-35" { 0.0 } else { 0.12 }
        - plan.difficulty;
    let engagement0 = 0.55 * ability + 0.8 * normal(rng) - 0.004 * (f64::from(credits) - 60.0);
    // How much this student clicks for the same engagement: habits, not prospects.
    let click_habit = 0.9 * normal(rng);
    let registered = -(5.0 + 55.0 * rng.sample::<f64, _>(Exp1)).min(315.0) as i32;
    let registered_written = (!chance(rng, 0.0015)).then_some(registered);

    // Weekly engagement: index 0 is the week before the start.
    let last_week = (plan.length - 1) / 7;
    let drift = 0.03 * (ability - 0.3);
    let mut engagement = Vec::with_capacity(last_week as usize + 2);
    let mut m = engagement0;
    engagement.push(m);
    for _ in 0..=last_week {
        m += drift + 0.15 * normal(rng);
        engagement.push(m);
    }
    let engagement_on = |day: i32| engagement[((day.max(-1) + 7) / 7) as usize];

    // Withdrawal: before the start, or by a weekly hazard that low engagement raises.
    let mut unregistered = None;
    if chance(rng, sigmoid(-2.5 - 0.7 * engagement0)) {
        unregistered = Some(registered + rng.random_range(0..=-registered));
    } else {
        for week in 0..=last_week {
            let hazard = sigmoid(
                -6.3 - 1.2 * engagement[week as usize + 1] + if week < 4 { 1.0 } else { 0.0 },
            );
            if chance(rng, hazard) {
                unregistered = Some((7 * week + rng.random_range(0..7)).min(plan.length - 1));
                break;
            }
        }
    }
    let active_until = unregistered.unwrap_or(plan.length - 1);
    // Whether a record dated `day` is in the export.
    let exported = |day: i32| running.is_none_or(|as_of| day <= as_of);

    // Assessments.
    let mut weighted = 0.0;
    let mut weight_total = 0.0;
    let mut tma_scores = Vec::new();
    for a in plan
        .assessments
        .iter()
        .filter(|a| a.kind != AssessmentKind::Exam)
    {
        let m = engagement_on(a.day);
        let (day, banked, score) =
            if a.kind == AssessmentKind::Tma && previous > 0 && chance(rng, 0.3) {
                (-1, true, 65.0 + 12.0 * normal(rng))
            } else if a.day > active_until {
                (0, false, f64::NAN)
            } else {
                let base = if a.kind == AssessmentKind::Tma {
                    2.0
                } else {
                    1.4
                };
                if !chance(rng, sigmoid(base + 1.3 * m + 0.6 * ability)) {
                    (0, false, f64::NAN)
                } else {
                    let day = if chance(rng, sigmoid(-1.6 - 0.7 * m)) {
                        a.day + 1 + poisson(rng, 4.0) as i32
                    } else {
                        a.day - poisson(rng, (0.8 + 0.3 * m).exp()) as i32
                    };
                    let score = if a.kind == AssessmentKind::Tma {
                        66.0 + 11.0 * ability + 3.0 * m + 11.0 * normal(rng)
                    } else {
                        76.0 + 10.0 * ability + 12.0 * normal(rng)
                    };
                    (day.max(registered), false, score)
                }
            };
        let score = score.round().clamp(0.0, 100.0);
        if a.kind == AssessmentKind::Tma {
            let counted = if score.is_nan() { 0.0 } else { score };
            weighted += a.weight * counted;
            weight_total += a.weight;
            tma_scores.push(counted);
        }
        if score.is_nan() {
            continue;
        }
        let written_score = (!chance(rng, 0.001)).then_some(score as i64);
        if !exported(day) {
            continue;
        }
        out.submissions.int(a.id as i64);
        out.submissions.int(id as i64);
        out.submissions.int(i64::from(day));
        out.submissions.int(i64::from(banked));
        out.submissions.opt_int(written_score);
        out.submissions.end_row()?;
    }
    let continuous = if weight_total > 0.0 {
        weighted / weight_total
    } else {
        tma_scores.iter().sum::<f64>() / tma_scores.len().max(1) as f64
    };

    // The exam and the result.
    let final_engagement = engagement[engagement.len() - 1];
    let result = if unregistered.is_some() {
        FinalResult::Withdrawn
    } else {
        let sits = chance(
            rng,
            sigmoid(2.0 + 1.2 * final_engagement + 0.6 * ability + 0.05 * (continuous - 40.0)),
        );
        if !sits {
            FinalResult::Fail
        } else {
            let exam = (60.0 + 14.0 * ability + 4.0 * final_engagement + 14.0 * normal(rng))
                .round()
                .clamp(0.0, 100.0);
            if plan.exam_rows {
                let a = plan
                    .assessments
                    .iter()
                    .find(|a| a.kind == AssessmentKind::Exam);
                if let Some(a) = a.filter(|a| exported(a.day)) {
                    out.submissions.int(a.id as i64);
                    out.submissions.int(id as i64);
                    out.submissions.int(i64::from(a.day));
                    out.submissions.int(0);
                    out.submissions.int(exam as i64);
                    out.submissions.end_row()?;
                }
            }
            if continuous < 40.0 || exam < 40.0 {
                FinalResult::Fail
            } else if (continuous + exam) / 2.0 >= 85.0 {
                FinalResult::Distinction
            } else {
                FinalResult::Pass
            }
        }
    };

    // Daily VLE activity, streamed.
    let mut prefix = Vec::with_capacity(48);
    for field in [
        plan.module.as_str(),
        plan.code,
        itoa::Buffer::new().format(id),
    ] {
        prefix.push(b'"');
        prefix.extend_from_slice(field.as_bytes());
        prefix.extend_from_slice(b"\",");
    }
    let first_day = registered.max(EARLIEST_ACTIVITY);
    for day in first_day..=active_until {
        let m = engagement_on(day);
        let mut logit = -0.6 + 1.1 * m + click_habit;
        if day < 0 {
            logit -= 1.0;
        }
        if day.rem_euclid(7) >= 5 {
            logit -= 0.3;
        }
        if plan.deadline_near(day) {
            logit += 0.8;
        }
        let mut p = sigmoid(logit);
        if let Some(left) = unregistered {
            p *= (f64::from(left - day) / 21.0).clamp(0.15, 1.0);
        }
        if !chance(rng, p) {
            continue;
        }
        let rows = 1 + poisson(rng, (0.85 + 0.3 * m).exp());
        let click_mean = (0.55 + 0.2 * m).exp();
        for _ in 0..rows {
            let family = &plan.sites_by_family[plan.family_pick.sample(rng)];
            let site = family[rng.random_range(0..family.len())];
            let clicks = 1 + poisson(rng, click_mean);
            if !exported(day) {
                continue;
            }
            out.clicks.raw_prefix(&prefix);
            out.clicks.int(site as i64);
            out.clicks.int(i64::from(day));
            out.clicks.int(i64::from(clicks));
            out.clicks.end_row()?;
        }
    }

    // Who they are, and how they registered.
    plan.keys(out.info);
    out.info.int(id as i64);
    out.info.text(gender);
    out.info.text(region);
    out.info.text(education);
    // The genuine export spells the second decile "10-20", without the "%".
    out.info
        .text(imd.map_or("", |d| if d == 1 { "10-20" } else { IMD_BANDS[d] }));
    out.info.text(age);
    out.info.int(i64::from(previous));
    out.info.int(i64::from(credits));
    out.info.text(if disability { "Y" } else { "N" });
    out.info.text(if running.is_some() {
        ""
    } else {
        result.as_str()
    });
    out.info.end_row()?;

    plan.keys(out.registration);
    out.registration.int(id as i64);
    out.registration.opt_int(registered_written.map(i64::from));
    out.registration
        .opt_int(unregistered.filter(|&day| exported(day)).map(i64::from));
    out.registration.end_row()
}
