//! [`Timestamp`]: a point in time as `state.json` writes it, RFC 3339 in UTC
//! with microseconds (`2026-11-27T21:00:00.123456Z`).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A wall-clock time, kept to the microsecond: what `created_at`,
/// `started_at` and `finished_at` hold. On disk and in [`fmt::Display`] it is
/// RFC 3339, UTC, six fractional digits, exactly as before it had a type; on
/// reading, any RFC 3339 form `humantime` accepts (another precision, a
/// space for the `T`) is taken, and kept to the microsecond.
///
/// ```
/// use nomad_shim::Timestamp;
///
/// let t = Timestamp::parse("2026-11-27T21:00:00.123456Z").unwrap();
/// assert_eq!(t.to_string(), "2026-11-27T21:00:00.123456Z");
/// assert!(Timestamp::now() > t);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// Now, to the microsecond.
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    /// The time itself.
    pub fn system_time(self) -> SystemTime {
        self.0
    }

    /// Parses RFC 3339 text (`2026-11-27T21:00:00.123456Z`).
    pub fn parse(text: &str) -> Result<Timestamp, humantime::TimestampError> {
        humantime::parse_rfc3339_weak(text).map(Timestamp::from)
    }
}

/// The last instant RFC 3339 (and `humantime`) can write:
/// 9999-12-31T23:59:59.999999Z.
const LAST: Duration = Duration::new(253_402_300_799, 999_999_000);

impl From<SystemTime> for Timestamp {
    /// Truncated to the microsecond: what is written is what is read back.
    /// Clamped to what RFC 3339 can write (1970-01-01 to the end of 9999),
    /// so that formatting a `Timestamp` can never fail or panic.
    fn from(t: SystemTime) -> Timestamp {
        let d = t
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .min(LAST);
        Timestamp(UNIX_EPOCH + Duration::from_micros(d.as_micros() as u64))
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> SystemTime {
        t.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`: widths and alignment work (`ps` lines them up).
        f.pad(&humantime::format_rfc3339_micros(self.0).to_string())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_micros(self.0))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Timestamp::parse(&text)
            .map_err(|e| serde::de::Error::custom(format!("timestamp {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_exactly_as_before() {
        let text = "2026-11-27T21:00:00.123456Z";
        let t: Timestamp = serde_json::from_str(&format!("\"{text}\"")).unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{text}\""));
        assert_eq!(t.to_string(), text);
        assert_eq!(format!("{t:<30}|"), format!("{text}   |"));
        let now = Timestamp::now();
        let again: Timestamp = serde_json::from_str(&serde_json::to_string(&now).unwrap()).unwrap();
        assert_eq!(again, now);
    }

    #[test]
    fn other_precisions_are_read_and_kept_to_the_microsecond() {
        let t = Timestamp::parse("2026-11-27T21:00:00.123456789Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-27T21:00:00.123456Z");
        let t = Timestamp::parse("2026-11-27T21:00:00Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-27T21:00:00.000000Z");
        assert!(
            Timestamp::parse("2026-11-27T21:00:00.1Z").unwrap()
                < Timestamp::parse("2026-11-27T21:00:00.2Z").unwrap()
        );
    }

    #[test]
    fn times_humantime_cannot_write_are_clamped_not_a_panic() {
        // Regression (issue 10 verification): Display panicked on both.
        let before = Timestamp::from(UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!(before.to_string(), "1970-01-01T00:00:00.000000Z");
        let after = Timestamp::from(UNIX_EPOCH + Duration::from_secs(300_000_000_000));
        assert_eq!(after.to_string(), "9999-12-31T23:59:59.999999Z");
        assert_eq!(
            serde_json::to_string(&after).unwrap(),
            "\"9999-12-31T23:59:59.999999Z\""
        );
    }

    #[test]
    fn garbage_is_a_named_error() {
        let e = serde_json::from_str::<Timestamp>("\"yesterday\"").unwrap_err();
        assert!(e.to_string().contains("timestamp \"yesterday\""), "{e}");
        assert!(serde_json::from_str::<Timestamp>("12").is_err());
    }
}
