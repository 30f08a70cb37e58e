//! Runs every example with small parameters and checks its key claim from its output, so
//! that the examples cannot rot.
//!
//! The examples are not rebuilt here: `cargo test` builds every example of the package
//! before it runs the tests, and this test runs those binaries from
//! `target/<profile>/examples/`. Each example prints a `SUMMARY key=value ...` line for it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

/// The built example `name`, next to this test binary's `deps/` directory.
fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent() // deps/
        .and_then(|d| d.parent()) // target/<profile>/
        .expect("test binary lives in target/<profile>/deps")
        .join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "example binary {} is missing. `cargo test` builds the examples before running \
         tests; if you ran only this test target, build them first with `cargo build \
         --examples` (same profile).",
        path.display()
    );
    // A binary older than its source (or the helpers every example includes) is stale: we
    // would test yesterday's example.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    for src in [dir.join(format!("{name}.rs")), dir.join("common/mod.rs")] {
        if let (Ok(bin), Ok(src_meta)) = (path.metadata(), src.metadata()) {
            if let (Ok(b), Ok(s)) = (bin.modified(), src_meta.modified()) {
                assert!(
                    b >= s,
                    "example binary {} is older than {}; rebuild with `cargo build --examples`",
                    path.display(),
                    src.display()
                );
            }
        }
    }
    path
}

/// Runs an example, asserts it succeeded, and returns its stdout.
fn run(name: &str, args: &[&str]) -> String {
    let out = Command::new(example_path(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running example {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example {name} {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The `key=value` pairs of the `SUMMARY` line.
fn summary(name: &str, args: &[&str], stdout: &str) -> HashMap<String, String> {
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with("SUMMARY "))
        .unwrap_or_else(|| panic!("example {name} {args:?} printed no SUMMARY line:\n{stdout}"));
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(s: &HashMap<String, String>, key: &str, context: &str) -> i64 {
    s.get(key)
        .unwrap_or_else(|| panic!("{context}: SUMMARY has no {key}"))
        .parse()
        .unwrap_or_else(|e| panic!("{context}: {key} is not a number: {e}"))
}

#[test]
fn clock_drift_wall_clock_misorders_and_hlc_never_does() {
    for seed in ["1", "2", "3", "4"] {
        for extra in [
            &[][..],
            &["--ntp-interval-ms", "300", "--drift-ppm", "20000"][..],
        ] {
            let mut args = vec!["--seed", seed, "--skew-ms", "150", "--messages", "30"];
            args.extend_from_slice(extra);
            let out = run("clock_drift", &args);
            let s = summary("clock_drift", &args, &out);
            let ctx = format!("clock_drift {args:?}");
            let n = |k| num(&s, k, &ctx);
            assert!(
                n("wall_violations") >= 1,
                "{ctx}: no wall-clock violation:\n{out}"
            );
            assert_eq!(n("hlc_violations"), 0, "{ctx}:\n{out}");
            assert_eq!(n("lamport_violations"), 0, "{ctx}:\n{out}");
            assert_eq!(n("vc_misjudged"), 0, "{ctx}:\n{out}");
            assert_eq!(
                n("vc_concurrent_detected"),
                n("concurrent_pairs"),
                "{ctx}:\n{out}"
            );
            assert_eq!(n("hlc_below_pt"), 0, "{ctx}:\n{out}");
            assert!(
                n("hlc_ahead_ms_max") <= n("epsilon_ms"),
                "{ctx}: HLC ran further ahead than ε:\n{out}"
            );
            assert_eq!(n("events"), 60, "{ctx}");
        }
    }
}

#[test]
fn clock_drift_backward_ntp_steps_and_held_back_messages_keep_hlc_correct() {
    // Large drift with frequent NTP: some steps go backwards.
    let args = [
        "--seed",
        "7",
        "--drift-ppm",
        "50000",
        "--ntp-interval-ms",
        "200",
        "--messages",
        "60",
    ];
    let out = run("clock_drift", &args);
    let s = summary("clock_drift", &args, &out);
    let ctx = format!("clock_drift {args:?}");
    assert!(num(&s, "ntp_backward_steps", &ctx) >= 1, "{ctx}:\n{out}");
    assert_eq!(num(&s, "hlc_violations", &ctx), 0, "{ctx}:\n{out}");
    assert!(num(&s, "hlc_ahead_ms_max", &ctx) <= num(&s, "epsilon_ms", &ctx));

    // A skew beyond the HLC's max offset: messages are held back, not mis-ordered.
    let args = ["--seed", "1", "--skew-ms", "2000", "--messages", "20"];
    let out = run("clock_drift", &args);
    let s = summary("clock_drift", &args, &out);
    let ctx = format!("clock_drift {args:?}");
    assert!(num(&s, "held_back", &ctx) >= 1, "{ctx}:\n{out}");
    assert_eq!(num(&s, "hlc_violations", &ctx), 0, "{ctx}:\n{out}");
}

#[test]
fn clock_drift_is_deterministic_and_writes_an_svg() {
    let dir = std::env::temp_dir().join(format!("meridian-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let svg = dir.join("drift.svg");
    let svg_arg = svg.to_str().expect("utf-8 temp path");
    let a = run("clock_drift", &["--seed", "9", "--svg", svg_arg]);
    let b = run("clock_drift", &["--seed", "9", "--svg", svg_arg]);
    assert_eq!(a, b, "same seed, different output");
    let c = run("clock_drift", &["--seed", "10"]);
    assert_ne!(
        a.lines().find(|l| l.starts_with("SUMMARY")),
        c.lines().find(|l| l.starts_with("SUMMARY")),
        "different seeds, same run"
    );
    let text = std::fs::read_to_string(&svg).expect("SVG written");
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    // 30 messages: one arrow each, and 60 labelled events.
    assert_eq!(text.matches("marker-end=").count(), 30);
    assert_eq!(text.matches("<circle").count(), 60);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hlc_bounds_hold_and_the_naive_clock_drifts() {
    let args = [
        "--duration-ms",
        "500",
        "--eps-ms",
        "0,5,50",
        "--rates",
        "20,450",
        "--checkpoints-ms",
        "1000,3000,6000",
    ];
    let out = run("hlc_bounds", &args);
    let s = summary("hlc_bounds", &args, &out);
    let ctx = format!("hlc_bounds {args:?}");
    assert_eq!(s["hlc_bounds_ok"], "true", "{ctx}:\n{out}");
    assert!(num(&s, "hlc_ahead_ms_max", &ctx) <= 50, "{ctx}:\n{out}");
    assert!(num(&s, "hlc_eps_slack_ms_min", &ctx) >= 0, "{ctx}:\n{out}");
    assert!(num(&s, "hlc_c_slack_min", &ctx) >= 0, "{ctx}:\n{out}");
    assert_eq!(num(&s, "hlc_below_pt", &ctx), 0, "{ctx}:\n{out}");
    assert_eq!(num(&s, "hlc_order_violations", &ctx), 0, "{ctx}:\n{out}");
    assert_eq!(num(&s, "hlc_rejected", &ctx), 0, "{ctx}:\n{out}");
    // The naive algorithm leaves ε behind and keeps going.
    assert!(num(&s, "naive_last_ms", &ctx) > 50, "{ctx}:\n{out}");
    assert!(num(&s, "naive_growth_ms", &ctx) > 0, "{ctx}:\n{out}");
}

#[test]
fn lww_lost_update_loses_exactly_the_later_add() {
    let out = run("lww_lost_update", &[]);
    let s = summary("lww_lost_update", &[], &out);
    assert_eq!(s["act1_added"], "book,pen");
    assert_eq!(s["act1_wall_lww_lost"], "pen", "{out}");
    assert_eq!(s["act1_hlc_lww_lost"], "none", "{out}");
    assert_eq!(s["act1_crdt_lost"], "none", "{out}");
    // Concurrent adds: both registers keep one, the CRDT keeps both.
    assert_ne!(s["act2_wall_lww_lost"], "none", "{out}");
    assert_ne!(s["act2_hlc_lww_lost"], "none", "{out}");
    assert_eq!(s["act2_crdt_lost"], "none", "{out}");
    // The human table says the same.
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["lost", "pen", "nothing", "nothing"]),
        "{out}"
    );

    // A skew smaller than the customer's pause loses nothing.
    let args = ["--skew-ms", "50"];
    let out = run("lww_lost_update", &args);
    let s = summary("lww_lost_update", &args, &out);
    assert_eq!(s["act1_wall_lww_lost"], "none", "{out}");
}

#[test]
fn dynamo_cart_resurrects_the_delete_and_meridian_does_not() {
    for seed in ["1", "2"] {
        let args = ["--trials", "300", "--seed", seed];
        let out = run("dynamo_cart", &args);
        let s = summary("dynamo_cart", &args, &out);
        let ctx = format!("dynamo_cart seed {seed}");
        assert_eq!(num(&s, "story_dynamo_resurrected", &ctx), 1, "{out}");
        assert_eq!(num(&s, "story_meridian_resurrected", &ctx), 0, "{out}");
        // Union brings the item back whenever the other region also wrote during the
        // partition (a concurrent sibling still holding it): in most variations.
        assert!(num(&s, "trials_dynamo_resurrected", &ctx) > 75, "{out}");
        assert_eq!(num(&s, "trials_meridian_resurrected", &ctx), 0, "{out}");
        assert!(out.contains("deleted, and back in Dynamo's cart"), "{out}");
    }
}
