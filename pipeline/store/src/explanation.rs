//! Explanations and weekly context stored compactly, shown in full.
//!
//! Callers hand the store an explanation as it is shown: `{"up": [factor, ...], "down": [...],
//! "flagged": bool}`, each factor `{"feature", "value", "typical", "contribution", "text"}`.
//! The store keeps what the sentence is made from: feature ids (from the `feature_names`
//! table), the student's value, the typical value and the contribution (as a 32-bit float:
//! seven significant digits, more than any page shows). The sentence is rendered again when the
//! prediction is read, by the same function that wrote it; where that would not give back the
//! same words (a sentence written by other code), the text is kept beside the numbers. The
//! weekly context (`{"clicks_this_week": 4, ...}`) is kept as `[id, value, id, value, ...]`.
//! Anything of another shape is stored as given, and rows written before this format are read
//! as they were written.
//!
//! Stored explanation: `[3,FLAGGED,[[ID,VALUE,TYPICAL,CONTRIBUTION(,TEXT)],...],[...]]` (up, then
//! down; FLAGGED 1 or 0). Explanations stored as `{"v":2,"f":FLAGGED,"u":[...],"d":[...]}` (the
//! same factors, more bytes) read the same.

use rustc_hash::FxHashMap;
use std::fmt::Write as _;

use lodestar_model::Factor;
use lodestar_model::explain::{describe, reads_other_values};
use serde_json::{Map, Value};

use crate::StoreError;

/// Feature names and their ids.
#[derive(Debug, Default, Clone)]
pub(crate) struct Dictionary {
    // Looked up for every factor of every staged row: a fast hash (the keys are our own).
    pub(crate) ids: FxHashMap<String, i64>,
    pub(crate) names: FxHashMap<i64, String>,
}

impl Dictionary {
    /// Every feature name an explanation or context mentions that has no id yet.
    pub(crate) fn missing<'a>(
        &self,
        explanation: &'a Value,
        context: &'a Value,
        out: &mut Vec<&'a str>,
    ) {
        for key in ["up", "down"] {
            if let Some(Value::Array(factors)) = explanation.get(key) {
                for f in factors {
                    if let Some(name) = f.get("feature").and_then(Value::as_str)
                        && !self.ids.contains_key(name)
                        && !out.contains(&name)
                    {
                        out.push(name);
                    }
                }
            }
        }
        if let Value::Object(m) = context {
            for name in m.keys() {
                if !self.ids.contains_key(name.as_str()) && !out.contains(&name.as_str()) {
                    out.push(name);
                }
            }
        }
    }
}

fn number(out: &mut String, v: f64) {
    if !v.is_finite() {
        out.push_str("null");
    } else if v.fract() == 0.0 && v.abs() < 1e15 && (v != 0.0 || v.is_sign_positive()) {
        // Whole numbers (most values are counts) as integers: what Display writes for them.
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else {
        // The shortest text that reads back as the same number (valid JSON: ryu writes an
        // exponent for very large or small magnitudes, which JSON allows).
        out.push_str(ryu::Buffer::new().format_finite(v));
    }
}

/// A contribution (an `f32`) as the shortest text that reads back as it.
fn contribution(out: &mut String, c: f32) {
    if !c.is_finite() {
        out.push_str("null");
    } else if c.fract() == 0.0 && c.abs() < 1e7 && (c != 0.0 || c.is_sign_positive()) {
        out.push_str(itoa::Buffer::new().format(c as i64));
    } else {
        out.push_str(ryu::Buffer::new().format_finite(c));
    }
}

/// One factor's parts, when it has the shape Lodestar writes.
struct Parts<'a> {
    feature: &'a str,
    value: Option<f64>,
    typical: f64,
    contribution: f64,
    text: &'a str,
}

fn parts(f: &Value) -> Option<Parts<'_>> {
    let m = f.as_object()?;
    if m.len() != 5 {
        return None;
    }
    Some(Parts {
        feature: m.get("feature")?.as_str()?,
        value: match m.get("value")? {
            Value::Null => None,
            v => Some(v.as_f64()?),
        },
        typical: m.get("typical")?.as_f64()?,
        contribution: m.get("contribution")?.as_f64()?,
        text: m.get("text")?.as_str()?,
    })
}

/// The student's value of `name` as the sentence reads it: the weekly context first, then the
/// explanation's own factors.
fn lookup(
    context: &Map<String, Value>,
    factors: &[(String, Option<f64>)],
    name: &str,
) -> Option<f64> {
    context.get(name).and_then(Value::as_f64).or_else(|| {
        factors
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| *v)
    })
}

/// Writes the stored form of factors `up` and `down`; `get` reads the student's other values
/// for the sentence check; `trusted` when each text is what `describe` wrote for its factor's
/// numbers (a model's factors). `None` when a feature has no id.
fn write_factors(
    flagged: bool,
    groups: [&[Parts<'_>]; 2],
    get: &dyn Fn(&str) -> Option<f64>,
    trusted: bool,
    dict: &Dictionary,
) -> Option<String> {
    let mut out = String::with_capacity(160);
    out.push_str(if flagged { "[3,1" } else { "[3,0" });
    for factors in groups {
        out.push_str(",[");
        for (i, p) in factors.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let id = dict.ids.get(p.feature)?;
            out.push('[');
            out.push_str(itoa::Buffer::new().format(*id));
            out.push(',');
            number(&mut out, p.value.unwrap_or(f64::NAN));
            out.push(',');
            number(&mut out, p.typical);
            out.push(',');
            contribution(&mut out, p.contribution as f32);
            // The sentence is rendered again when read; where that would not give the same
            // words, it is kept. Words the model wrote by `describe` from these numbers alone
            // need no check.
            let rendered_alike = trusted && !reads_other_values(p.feature);
            if !rendered_alike && describe(p.feature, p.value, p.typical, get) != p.text {
                out.push(',');
                out.push_str(&Value::String(p.text.to_owned()).to_string());
            }
            out.push(']');
        }
        out.push(']');
    }
    out.push(']');
    Some(out)
}

/// The stored form of an explanation, or `None` when it is not of the shape Lodestar writes
/// (then it is stored as given). Every feature must have an id in `dict`.
pub(crate) fn encode(explanation: &Value, context: &Value, dict: &Dictionary) -> Option<String> {
    let m = explanation.as_object()?;
    if m.len() != 3 {
        return None;
    }
    let flagged = m.get("flagged")?.as_bool()?;
    let empty = Map::new();
    let ctx = context.as_object().unwrap_or(&empty);
    let mut groups: [Vec<Parts<'_>>; 2] = Default::default();
    for (key, these) in ["up", "down"].iter().zip(groups.iter_mut()) {
        for f in m.get(*key)?.as_array()? {
            these.push(parts(f)?);
        }
    }
    let all: Vec<(String, Option<f64>)> = groups
        .iter()
        .flatten()
        .map(|p| (p.feature.to_owned(), p.value))
        .collect();
    write_factors(
        flagged,
        [&groups[0], &groups[1]],
        &|n| lookup(ctx, &all, n),
        false,
        dict,
    )
}

/// The stored form of a scored prediction's factors and weekly context, straight from the
/// model's output (no JSON values in between): the same text [`encode`] and
/// [`encode_context`] write for the same content. Each factor's text must be the one the model
/// wrote (`describe` of its numbers), as [`lodestar_model::Artifact`]'s factors are.
pub(crate) fn encode_scored(
    up: &[Factor],
    down: &[Factor],
    flagged: bool,
    context: &[(&str, f64)],
    dict: &Dictionary,
) -> (Option<String>, Option<String>) {
    fn to_parts(f: &[Factor]) -> Vec<Parts<'_>> {
        f.iter()
            .map(|f| Parts {
                feature: &f.feature,
                value: f.value,
                typical: f.typical,
                contribution: f.contribution,
                text: &f.text,
            })
            .collect()
    }
    let (u, d) = (to_parts(up), to_parts(down));
    let get = |name: &str| {
        context
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .or_else(|| {
                u.iter()
                    .chain(&d)
                    .find(|p| p.feature == name)
                    .and_then(|p| p.value)
            })
    };
    let explanation = write_factors(flagged, [&u, &d], &get, true, dict);
    let context = write_context(context.iter().map(|(n, v)| (*n, Some(*v))), dict);
    (explanation, context)
}

/// Writes a weekly context as `[id, value, ...]`; `None` when a feature has no id or a value is
/// not a number.
fn write_context<'a>(
    pairs: impl Iterator<Item = (&'a str, Option<f64>)>,
    dict: &Dictionary,
) -> Option<String> {
    let mut out = String::with_capacity(64);
    out.push('[');
    for (i, (name, v)) in pairs.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{},", dict.ids.get(name)?);
        number(&mut out, v?);
    }
    out.push(']');
    Some(out)
}

/// The stored form of a weekly context: `[id, value, ...]`, or `None` when it is not an object
/// of numbers.
pub(crate) fn encode_context(context: &Value, dict: &Dictionary) -> Option<String> {
    let m = context.as_object()?;
    write_context(m.iter().map(|(n, v)| (n.as_str(), v.as_f64())), dict)
}

/// A stored weekly context as shown: an object of numbers.
pub(crate) fn decode_context(stored: Value, dict: &Dictionary) -> Result<Value, StoreError> {
    let Value::Array(items) = stored else {
        return Ok(stored);
    };
    let mut out = Map::new();
    for pair in items.chunks(2) {
        let [id, v] = pair else {
            return Err(StoreError::Invalid(
                "a stored context has an odd number of items".into(),
            ));
        };
        let id = id.as_i64().ok_or_else(|| {
            StoreError::Invalid("a stored context's feature id is not a number".into())
        })?;
        let name = dict.names.get(&id).ok_or(StoreError::UnknownFeature(id))?;
        // Numbers as they were given (floats: `3.0` reads back as 3.0, not 3).
        let v = v.as_f64().map_or(Value::Null, Value::from);
        out.insert(name.clone(), v);
    }
    Ok(Value::Object(out))
}

/// A stored factor: feature, value, typical value, contribution, and the sentence when it was
/// kept.
type StoredFactor = (String, Option<f64>, f64, f64, Option<String>);

/// A stored explanation as shown, its sentences rendered from the stored numbers.
pub(crate) fn decode(
    stored: Value,
    context: &Value,
    dict: &Dictionary,
) -> Result<Value, StoreError> {
    // `[3,FLAGGED,[up...],[down...]]`, or the earlier `{"v":2,"f":FLAGGED,"u":[...],"d":[...]}`.
    let (flagged, lists) = match &stored {
        Value::Array(a)
            if a.len() == 4
                && a[0].as_i64() == Some(3)
                && a[1].is_u64()
                && a[2].is_array()
                && a[3].is_array() =>
        {
            (Value::Bool(a[1].as_u64() == Some(1)), [&a[2], &a[3]])
        }
        Value::Object(m) if m.get("v").and_then(Value::as_i64) == Some(2) => {
            let bad = || StoreError::Invalid("a stored explanation is malformed".to_owned());
            (
                m.get("f").cloned().unwrap_or(Value::Bool(false)),
                [m.get("u").ok_or_else(bad)?, m.get("d").ok_or_else(bad)?],
            )
        }
        _ => return Ok(stored),
    };
    let empty = Map::new();
    let ctx = context.as_object().unwrap_or(&empty);
    let bad = || StoreError::Invalid("a stored explanation is malformed".to_owned());
    let mut groups: Vec<Vec<StoredFactor>> = Vec::new();
    for list in lists {
        let mut these = Vec::new();
        for f in list.as_array().ok_or_else(bad)? {
            let f = f.as_array().ok_or_else(bad)?;
            let id = f.first().and_then(Value::as_i64).ok_or_else(bad)?;
            let name = dict.names.get(&id).ok_or(StoreError::UnknownFeature(id))?;
            let value = f.get(1).and_then(Value::as_f64);
            let typical = f.get(2).and_then(Value::as_f64).ok_or_else(bad)?;
            let contribution = f.get(3).and_then(Value::as_f64).ok_or_else(bad)?;
            let text = f.get(4).and_then(Value::as_str).map(str::to_owned);
            these.push((name.clone(), value, typical, contribution, text));
        }
        groups.push(these);
    }
    let all: Vec<(String, Option<f64>)> = groups
        .iter()
        .flatten()
        .map(|(n, v, ..)| (n.clone(), *v))
        .collect();
    let mut out = Map::new();
    for (key, factors) in ["up", "down"].iter().zip(groups) {
        let list: Vec<Value> = factors
            .into_iter()
            .map(|(name, value, typical, contribution, text)| {
                let text = text
                    .unwrap_or_else(|| describe(&name, value, typical, &|n| lookup(ctx, &all, n)));
                serde_json::json!({
                    "feature": name,
                    "value": value,
                    "typical": typical,
                    "contribution": contribution,
                    "text": text,
                })
            })
            .collect();
        out.insert((*key).to_owned(), Value::Array(list));
    }
    out.insert("flagged".into(), flagged);
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dict() -> Dictionary {
        let mut d = Dictionary::default();
        for (i, n) in [
            "days_since_last_activity",
            "assessments_missing",
            "assessments_due",
            "clicks_this_week",
            "trend_vs_own",
        ]
        .iter()
        .enumerate()
        {
            d.ids.insert((*n).to_owned(), i as i64 + 1);
            d.names.insert(i as i64 + 1, (*n).to_owned());
        }
        d
    }

    #[test]
    fn an_explanation_reads_back_as_it_was_shown() {
        let d = dict();
        let context = json!({"assessments_due": 3.0, "clicks_this_week": 0.0});
        let explanation = json!({
            "up": [
                {"feature": "days_since_last_activity", "value": 12.0, "typical": 2.0,
                 "contribution": 0.4213124184, "text": "no activity for 12 days (typical: 2)"},
                {"feature": "assessments_missing", "value": 2.0, "typical": 0.0,
                 "contribution": 0.2, "text": "2 of 3 assessments due so far missing"},
                {"feature": "trend_vs_own", "value": null, "typical": 1.0,
                 "contribution": 0.1, "text": "written by someone else"},
            ],
            "down": [],
            "flagged": true,
        });
        let stored = encode(&explanation, &context, &d).unwrap();
        assert!(stored.len() < explanation.to_string().len() / 2, "{stored}");
        // The third sentence is not what the renderer would write: it is kept.
        assert!(stored.contains("written by someone else"), "{stored}");
        let ctx = encode_context(&context, &d).unwrap();
        let ctx_back = decode_context(serde_json::from_str(&ctx).unwrap(), &d).unwrap();
        assert_eq!(ctx_back, context);
        let back = decode(serde_json::from_str(&stored).unwrap(), &ctx_back, &d).unwrap();
        for (a, b) in back["up"]
            .as_array()
            .unwrap()
            .iter()
            .zip(explanation["up"].as_array().unwrap())
        {
            assert_eq!(a["text"], b["text"]);
            assert_eq!(a["feature"], b["feature"]);
            assert_eq!(a["value"], b["value"]);
            assert_eq!(a["typical"], b["typical"]);
            let (x, y) = (
                a["contribution"].as_f64().unwrap(),
                b["contribution"].as_f64().unwrap(),
            );
            assert!((x - y).abs() < 1e-6 * y.abs().max(1.0), "{x} {y}");
        }
        assert_eq!(back["flagged"], true);
        assert_eq!(back["down"], json!([]));
    }

    #[test]
    fn a_scored_prediction_is_stored_as_its_json_would_be() {
        let d = dict();
        let f = |feature: &str, value: Option<f64>, typical: f64, contribution: f64, text: &str| {
            Factor {
                feature: feature.into(),
                value,
                typical,
                contribution,
                text: text.into(),
            }
        };
        let up = vec![
            f(
                "days_since_last_activity",
                Some(12.0),
                2.0,
                0.42131,
                "no activity for 12 days (typical: 2)",
            ),
            f(
                "assessments_missing",
                Some(2.0),
                0.0,
                0.2,
                "2 of 3 assessments due so far missing",
            ),
        ];
        let no_trend = describe("trend_vs_own", None, 1.0, &|_| None);
        let down = vec![f("trend_vs_own", None, 1.0, -0.1, &no_trend)];
        let context = [("assessments_due", 3.0), ("clicks_this_week", 0.5)];
        let (e, c) = encode_scored(&up, &down, false, &context, &d);
        let as_json = json!({"up": up, "down": down, "flagged": false});
        let ctx_json = json!({"assessments_due": 3.0, "clicks_this_week": 0.5});
        assert_eq!(e, encode(&as_json, &ctx_json, &d));
        assert_eq!(c, encode_context(&ctx_json, &d));
        // Words that read other values are checked against what reading will render: a model
        // that saw 4 assessments due where the stored week says 3 keeps its sentence.
        let up = vec![f(
            "assessments_missing",
            Some(2.0),
            0.0,
            0.2,
            "2 of 4 assessments due so far missing",
        )];
        let (e, _) = encode_scored(&up, &[], false, &context, &d);
        assert_eq!(
            e.as_deref(),
            Some("[3,0,[[2,2,0,0.2,\"2 of 4 assessments due so far missing\"]],[]]")
        );
        let as_json = json!({"up": up, "down": [], "flagged": false});
        assert_eq!(e, encode(&as_json, &ctx_json, &d));
    }

    #[test]
    fn explanations_stored_in_the_earlier_form_read_the_same() {
        let d = dict();
        let context = json!({"assessments_due": 3.0});
        let v2 = json!({"v": 2, "f": true,
            "u": [[1, 12.0, 2.0, 0.42131], [2, 2.0, 0.0, 0.2]],
            "d": [[5, null, 1.0, -0.1, "kept as written"]]});
        let v3 = json!([
            3,
            1,
            [[1, 12.0, 2.0, 0.42131], [2, 2.0, 0.0, 0.2]],
            [[5, null, 1.0, -0.1, "kept as written"]]
        ]);
        let a = decode(v2, &context, &d).unwrap();
        assert_eq!(a, decode(v3, &context, &d).unwrap());
        assert_eq!(a["up"][0]["text"], "no activity for 12 days (typical: 2)");
        assert_eq!(a["up"][1]["text"], "2 of 3 assessments due so far missing");
        assert_eq!(a["down"][0]["text"], "kept as written");
        assert_eq!(a["flagged"], true);
        // An array of another shape is a value stored as given.
        let given = json!([3, 1, 2]);
        assert_eq!(decode(given.clone(), &context, &d).unwrap(), given);
    }

    #[test]
    fn other_shapes_are_stored_as_given() {
        let d = dict();
        let odd = json!({"up": ["no activity for 12 days"], "down": []});
        assert!(encode(&odd, &Value::Null, &d).is_none());
        assert_eq!(decode(odd.clone(), &Value::Null, &d).unwrap(), odd);
        let unknown = json!({"up": [], "down": [{"feature": "new_feature", "value": 1.0,
            "typical": 0.0, "contribution": -0.1, "text": "t"}], "flagged": false});
        assert!(encode(&unknown, &Value::Null, &d).is_none());
    }
}
