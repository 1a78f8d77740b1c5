//! Property tests (issue 9, point 4) of the parsers of cgroup files: the
//! kernel writes them, but a fixture or another kernel may write anything.
//! See `src/proptests.rs` for the cases and how to run more.

use std::path::Path;

use proptest::prelude::*;

use super::{files, stats};
use crate::proptests::config;

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn cgroup_file_parsers_never_panic(s in prop_oneof![".{0,60}", "([a-z_]{1,12} -?[0-9]{1,25}\n){0,8}"]) {
                let _ = stats::parse_v2_cpu_stat(&s);
        let _ = stats::parse_v1_cpuacct_stat(&s, 100);
        let _ = stats::parse_v1_cpu_stat(&s);
        let _ = stats::parse_v2_memory_stat(&s);
        let _ = stats::parse_v1_memory_stat(&s);
        let _ = files::parse_u64(Path::new("x"), &s);
        let _ = files::keyed(&s, "oom_kill");
    }

    #[test]
    fn a_cgroup_number_parses_back(n in any::<u64>()) {
        prop_assert_eq!(files::parse_u64(Path::new("x"), &n.to_string()).ok(), Some(n));
    }
}
