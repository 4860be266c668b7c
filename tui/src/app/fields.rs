//! Numeric JSON fields of a topic's recent payloads, for the Topics view's
//! sparkline: which fields there are (paths such as `temp`, `body.load[0]`
//! or `(value)` for a bare number) and one field's values over the topic's
//! bounded history.
//!
//! An envelope contributes the numbers of its `body` (prefixed `body.`);
//! its own header holds none worth plotting. Other JSON contributes every
//! number. Text and binary contribute nothing. Every walk is bounded
//! ([`MAX_LEAVES`] per payload, [`MAX_FIELDS`] per topic), so a huge or
//! deeply nested payload costs no more than a small one.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use signalbox_common::envelope::Payload;

use super::Msg;

/// Leaves looked at per payload: a 256 KiB document of numbers must not
/// cost a frame.
const MAX_LEAVES: usize = 500;
/// Fields offered per topic (the operator cycles through them with a key).
pub const MAX_FIELDS: usize = 64;
/// JSON nesting followed (deeper values are ignored, not an error).
const MAX_DEPTH: usize = 16;

/// Calls `found(path, number)` for every numeric leaf of `payload`, in
/// document order, bounded by [`MAX_LEAVES`].
fn walk_numbers(payload: &Payload, found: &mut dyn FnMut(&str, f64)) {
    let mut budget = MAX_LEAVES;
    match payload {
        Payload::Envelope(e) => walk("body", &e.body, 0, &mut budget, found),
        Payload::Json(v) => walk("", v, 0, &mut budget, found),
        Payload::Text(_) | Payload::Binary(_) => {}
    }
}

fn walk(
    path: &str,
    value: &Value,
    depth: usize,
    budget: &mut usize,
    found: &mut dyn FnMut(&str, f64),
) {
    if *budget == 0 || depth > MAX_DEPTH {
        return;
    }
    match value {
        Value::Number(n) => {
            *budget -= 1;
            if let Some(x) = n.as_f64().filter(|x| x.is_finite()) {
                found(if path.is_empty() { "(value)" } else { path }, x);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                if *budget == 0 {
                    return;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(&p, v, depth + 1, budget, found);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                if *budget == 0 {
                    return;
                }
                walk(&format!("{path}[{i}]"), v, depth + 1, budget, found);
            }
        }
        _ => *budget -= 1,
    }
}

/// The numeric fields found in `history`, sorted by path (a stable order
/// to cycle through), at most [`MAX_FIELDS`].
pub fn numeric_fields(history: &VecDeque<Arc<Msg>>) -> Vec<String> {
    let mut fields = BTreeSet::new();
    // Newest first: when there are more fields than offered, the current
    // payloads' fields win.
    for m in history.iter().rev() {
        walk_numbers(&m.payload, &mut |path, _| {
            if fields.len() < MAX_FIELDS {
                fields.insert(path.to_string());
            }
        });
    }
    fields.into_iter().collect()
}

/// The value of `path` in `payload`, if it is a number there.
pub fn value_of(payload: &Payload, path: &str) -> Option<f64> {
    let mut value = None;
    walk_numbers(payload, &mut |p, x| {
        if value.is_none() && p == path {
            value = Some(x);
        }
    });
    value
}

/// One field's values in `history`, oldest first (payloads without it are
/// skipped).
pub fn series(history: &VecDeque<Arc<Msg>>, path: &str) -> Vec<f64> {
    history
        .iter()
        .filter_map(|m| value_of(&m.payload, path))
        .collect()
}

/// The sparkline the Topics view shows for the selected topic.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSeries {
    /// The field's path (`body.temp`).
    pub path: String,
    /// Its position among the topic's numeric fields (from 0)…
    pub index: usize,
    /// …and how many there are.
    pub count: usize,
    /// Its values, oldest first.
    pub values: Vec<f64>,
}

impl FieldSeries {
    /// The smallest and largest value.
    pub fn range(&self) -> Option<(f64, f64)> {
        let mut it = self.values.iter().copied();
        let first = it.next()?;
        Some(it.fold((first, first), |(lo, hi), x| (lo.min(x), hi.max(x))))
    }

    /// The values scaled to 13..=100 for a sparkline with a maximum of 100
    /// (ratatui's takes unsigned integers; the lowest value still shows as
    /// the lowest bar of one line, and a constant series at half height).
    pub fn scaled(&self) -> Vec<u64> {
        let Some((lo, hi)) = self.range() else {
            return Vec::new();
        };
        self.values
            .iter()
            .map(|x| {
                if hi > lo {
                    13 + ((x - lo) / (hi - lo) * 87.0).round() as u64
                } else {
                    50
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::fixtures::{envelope_with_body, incoming};
    use serde_json::json;

    fn history(payloads: &[Vec<u8>]) -> VecDeque<Arc<Msg>> {
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Arc::new(Msg::from_incoming(
                    i as u64 + 1,
                    incoming("signalbox/dev/sensor/t", p, false, i as i64),
                    false,
                ))
            })
            .collect()
    }

    #[test]
    fn fields_come_from_json_and_envelope_bodies_sorted() {
        let h = history(&[
            br#"{"temp": 21.5, "unit": "C", "deep": {"a": [1, "x", 2.5]}}"#.to_vec(),
            br#"42"#.to_vec(),
            envelope_with_body(
                "signalbox/dev/sensor/t",
                json!({"load": 0.7, "ok": true}),
                1,
            ),
            b"plain text 12".to_vec(),
            vec![0, 255, 7],
        ]);
        assert_eq!(
            numeric_fields(&h),
            ["(value)", "body.load", "deep.a[0]", "deep.a[2]", "temp"]
        );
        assert_eq!(series(&h, "temp"), [21.5]);
        assert_eq!(series(&h, "body.load"), [0.7]);
        assert_eq!(series(&h, "(value)"), [42.0]);
        assert_eq!(series(&h, "nope"), Vec::<f64>::new());
    }

    #[test]
    fn walks_are_bounded() {
        let many: Vec<u32> = (0..10_000).collect();
        let h = history(&[serde_json::to_vec(&json!({ "xs": many })).expect("json")]);
        assert_eq!(numeric_fields(&h).len(), MAX_FIELDS);
        assert_eq!(
            value_of(&h[0].payload, "xs[9999]"),
            None,
            "beyond the leaf budget"
        );
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!({ "d": deep });
        }
        let h = history(&[serde_json::to_vec(&deep).expect("json")]);
        assert!(numeric_fields(&h).is_empty(), "too deep to follow");
    }

    #[test]
    fn scaling_spans_the_range_and_handles_constants() {
        let s = FieldSeries {
            path: "t".into(),
            index: 0,
            count: 1,
            values: vec![-5.0, 0.0, 5.0],
        };
        assert_eq!(s.range(), Some((-5.0, 5.0)));
        assert_eq!(s.scaled(), [13, 57, 100]);
        let flat = FieldSeries {
            values: vec![3.0, 3.0],
            ..s.clone()
        };
        assert_eq!(flat.scaled(), [50, 50]);
        let empty = FieldSeries {
            values: vec![],
            ..s
        };
        assert_eq!(empty.range(), None);
        assert!(empty.scaled().is_empty());
    }
}
