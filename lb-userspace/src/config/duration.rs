//! Durations as written in the config: `500ms`, `2s`, `10m`, `1h30m`, `1d`.
//!
//! Whole numbers with a unit each, largest unit first, each unit once. A bare
//! number is refused: `timeout: 2` could mean seconds or milliseconds, and a
//! load balancer should not guess.

use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses `1h30m`-style text. The error says how to write it instead.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const EXAMPLE: &str = "e.g. 2s, 500ms or 1h30m";
    if text.is_empty() {
        return Err(format!(
            "empty duration; write a number and a unit, {EXAMPLE}"
        ));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` has no unit; write a unit, e.g. {text}s"));
    }
    let mut millis: u64 = 0;
    // Index into UNITS of the last unit used: the next one must be smaller.
    let mut last: Option<usize> = None;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let letters = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        let (number, unit) = (&rest[..digits], &rest[digits..digits + letters]);
        let after = &rest[digits + letters..];
        if unit.is_empty() && after.starts_with('.') {
            return Err(format!(
                "`{text}` has a fraction; use a smaller unit instead, e.g. 1500ms for 1.5s"
            ));
        }
        if number.is_empty() {
            return Err(format!(
                "`{text}` is not a duration; write a number and a unit, {EXAMPLE}"
            ));
        }
        if unit.is_empty() {
            if after.is_empty() {
                return Err(format!("`{text}` ends without a unit; {EXAMPLE}"));
            }
            return Err(format!(
                "`{text}` is not a duration; write a number and a unit without spaces, {EXAMPLE}"
            ));
        }
        let Some(i) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(format!(
                "unknown unit `{unit}` in `{text}`; use ms, s, m, h or d"
            ));
        };
        if last.is_some_and(|l| i <= l) {
            return Err(format!(
                "`{text}` is out of order; write larger units first and each unit once, e.g. 1h30m"
            ));
        }
        last = Some(i);
        millis = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(UNITS[i].1))
            .and_then(|n| n.checked_add(millis))
            .ok_or_else(|| format!("`{text}` is too long"))?;
        rest = after;
    }
    Ok(Duration::from_millis(millis))
}

/// Writes a duration the way [`parse_duration`] reads it (`1h30m`, `500ms`,
/// `0s`); sub-millisecond parts are dropped.
pub fn format_duration(duration: Duration) -> String {
    let mut millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        if millis >= size {
            out.push_str(&format!("{}{unit}", millis / size));
            millis %= size;
        }
    }
    out
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a duration such as 2s, 500ms or 1h30m")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "`{v}` has no unit; write a unit, e.g. {v}s"
        )))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "`{v}` is not a duration; write a positive number with a unit, e.g. 2s"
        )))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "`{v}` is not a duration; write whole numbers with a unit, e.g. 2s or 1500ms"
        )))
    }
}

/// `#[serde(with = "duration::required")]` for `Duration` fields.
pub mod required {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

/// `#[serde(default, with = "duration::optional")]` for `Option<Duration>`.
pub mod optional {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        struct Opt;
        impl<'de> Visitor<'de> for Opt {
            type Value = Option<Duration>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as 2s, 500ms or 1h30m")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                super::required::deserialize(d).map(Some)
            }
        }
        d.deserialize_option(Opt)
    }
}
