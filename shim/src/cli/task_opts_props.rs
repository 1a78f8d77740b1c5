//! Property tests (issue 9, point 4) of the CLI's parsers of task options:
//! sizes, counts, durations, signals, `--env`, `--rlimit`, `--mount`,
//! `--bind`, `--device`. Bounded like the library's (`src/proptests.rs`):
//! `PROPTEST_CASES` runs more. Every parser returns on any input (an error
//! names what is wrong, clap adds the option); a number written in a form
//! the help text shows parses back to itself.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        ..ProptestConfig::default()
    }
}

/// Any string, with digits, units, signs and separators made frequent.
fn arg() -> impl Strategy<Value = String> {
    let chars = prop_oneof![
        4 => prop::sample::select(vec![
            '0', '1', '9', '.', '-', '+', 'e', 'K', 'm', 'G', 'T', 'i', 'B', 's', ' ', '=', ':', ',',
        ]),
        1 => any::<char>(),
    ];
    prop::collection::vec(chars, 0..24).prop_map(|v| v.into_iter().collect())
}

const UNITS: [(&str, u32); 9] = [
    ("", 0),
    ("K", 10),
    ("k", 10),
    ("M", 20),
    ("G", 30),
    ("T", 40),
    ("KiB", 10),
    ("MB", 20),
    ("g", 30),
];

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn no_option_parser_panics(s in arg()) {
        let _ = parse_size(&s);
        let _ = parse_count(&s);
        let _ = parse_count_u64(&s);
        let _ = humantime::parse_duration(&s);
        let _ = parse_signal_arg(&s);
        let _ = parse_kill_signal_arg(&s);
        let _ = parse_env(&s);
        let _ = parse_rlimit(&s);
        let _ = parse_mount(&s);
        let _ = parse_bind(&s);
        let _ = parse_device(&s);
    }

    /// `N`, `NK`, `NMiB`...: exactly N times the unit, or "too large" when
    /// that does not fit in 64 bits; never a wrapped or rounded number.
    #[test]
    fn a_whole_size_is_exact_or_too_large(n in prop_oneof![any::<u64>(), 0u64..1 << 24], unit in prop::sample::select(UNITS.to_vec())) {
        let (suffix, shift) = unit;
        let got = parse_size(&format!("{n}{suffix}"));
        match n.checked_mul(1u64 << shift) {
            Some(bytes) => prop_assert_eq!(got, Ok(bytes)),
            None => prop_assert!(got.is_err_and(|e| e.contains("too large"))),
        }
    }

    #[test]
    fn a_negative_size_is_refused(n in 1u64.., unit in prop::sample::select(UNITS.to_vec())) {
        let s = format!("-{n}{}", unit.0);
        prop_assert!(parse_size(&s).is_err(), "{} accepted", s);
    }

    #[test]
    fn a_count_parses_back_and_a_negative_one_is_refused(n in any::<usize>()) {
        prop_assert_eq!(parse_count(&n.to_string()), Ok(n));
        prop_assert_eq!(parse_count_u64(&n.to_string()), Ok(n as u64));
        if n > 0 {
            let s = format!("-{n}");
            prop_assert!(parse_count(&s).is_err(), "{} accepted", s);
        }
    }

    /// `--kill-timeout`, `stop --timeout`: what humantime writes, it reads.
    #[test]
    fn a_duration_parses_back(secs in 0u64..1 << 40, nanos in 0u32..1_000_000_000, unit in prop::sample::select(vec![("ms", 1_000_000u64), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000)])) {
        let d = Duration::new(secs, nanos);
        prop_assert_eq!(humantime::parse_duration(&humantime::format_duration(d).to_string()), Ok(d));
        let n = secs % 100_000;
        prop_assert_eq!(humantime::parse_duration(&format!("{n}{}", unit.0)), Ok(Duration::from_nanos(n * unit.1)));
    }

    /// `--rlimit NAME=SOFT[:HARD]`: numbers and `unlimited` parse back.
    #[test]
    fn an_rlimit_parses_back(name in "[a-z]{1,10}", soft in prop::option::of(any::<u64>()), hard in prop::option::of(any::<u64>())) {
        let word = |v: Option<u64>| v.map_or("unlimited".to_string(), |n| n.to_string());
        let r = parse_rlimit(&format!("{name}={}:{}", word(soft), word(hard))).unwrap();
        prop_assert_eq!((r.resource, r.soft, r.hard), (name, soft.unwrap_or(u64::MAX), hard.unwrap_or(u64::MAX)));
    }

    /// `--env KEY=VALUE`: the first `=` splits; the value keeps any others.
    #[test]
    fn an_env_pair_parses_back(k in "[A-Za-z_][A-Za-z0-9_]{0,10}", v in ".{0,20}") {
        prop_assert_eq!(parse_env(&format!("{k}={v}")), Ok((k, v)));
    }
}
