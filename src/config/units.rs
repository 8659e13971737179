//! Durations (`"30d"`, `"90s"`) and sizes (`"32MiB"`, `1048576`) as people write them in TOML.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A duration written as text with a unit (`30d`, `5m`, `1h 30m`) or as whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationText(pub Duration);

impl DurationText {
    pub const fn from_secs(secs: u64) -> DurationText {
        DurationText(Duration::from_secs(secs))
    }
}

impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for DurationText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(DurationText::from_secs(s)),
            Raw::Text(t) => humantime::parse_duration(&t)
                .map(DurationText)
                .map_err(|e| {
                    de::Error::custom(format!(
                        "`{t}` is not a duration ({e}); write e.g. \"30d\", \"90s\""
                    ))
                }),
        }
    }
}

/// A size in bytes, written as an integer or with a unit: `512KiB`, `32MiB`, `1GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeText(pub u64);

impl SizeText {
    pub fn parse(text: &str) -> Result<SizeText, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{text}` is not a size; write e.g. \"32MiB\" or 1048576"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "`{text}`: unknown size unit `{other}` (use B, KiB, MiB, GiB, kB, MB, GB)"
                ));
            }
        };
        n.checked_mul(mult)
            .map(SizeText)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl fmt::Display for SizeText {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (size, name) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for SizeText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SizeText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(b) => Ok(SizeText(b)),
            Raw::Text(t) => SizeText::parse(&t).map_err(de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print_back() {
        assert_eq!(SizeText::parse("32MiB").unwrap().0, 32 << 20);
        assert_eq!(SizeText::parse("1000").unwrap().0, 1000);
        assert_eq!(SizeText::parse("2 kB").unwrap().0, 2000);
        assert!(
            SizeText::parse("12 parsecs")
                .unwrap_err()
                .contains("parsecs")
        );
        assert_eq!(SizeText(32 << 20).to_string(), "32MiB");
        assert_eq!(SizeText(1001).to_string(), "1001B");
    }

    #[test]
    fn durations_parse_from_text_or_seconds() {
        let d: DurationText = toml::Value::String("30d".into()).try_into().unwrap();
        assert_eq!(d.0, Duration::from_secs(30 * 86_400));
        let d: DurationText = toml::Value::Integer(90).try_into().unwrap();
        assert_eq!(d.0, Duration::from_secs(90));
        let e = toml::Value::String("soon".into())
            .try_into::<DurationText>()
            .unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
    }
}
