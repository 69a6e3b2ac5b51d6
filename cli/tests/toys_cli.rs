//! hypotest-toys end to end: reproducibility across thread counts, shards that merge into the
//! single run exactly, resolution statements, bad shards.

mod common;
use common::{example, tmp};
use serde_json::Value;
use std::process::Command;

fn toys(extra: &[&str]) -> Vec<u8> {
    let seeded = extra.contains(&"--seed");
    let out = Command::new(env!("CARGO_BIN_EXE_nextstat"))
        .args([
            "hypotest-toys",
            "--input",
            &example("counting.json"),
            "--mu",
            "1.5",
            "--json",
        ])
        .args(if seeded { vec![] } else { vec!["--seed", "77"] })
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn same_seed_same_bytes_with_one_and_two_threads() {
    let a = toys(&["--n-toys", "200", "--threads", "1"]);
    let b = toys(&["--n-toys", "200", "--threads", "2"]);
    assert_eq!(a, b, "JSON differs between 1 and 2 threads");
    let v: Value = serde_json::from_slice(&a).unwrap();
    for key in [
        "cls_obs",
        "cls_exp",
        "clsb",
        "clb",
        "n_toys",
        "seed",
        "failed_fits",
        "q_obs",
        "cls_obs_err",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["cls_exp"].as_array().unwrap().len(), 5);
    let c = toys(&["--n-toys", "200", "--seed", "78"]);
    assert_ne!(a, c, "another seed gives other toys");
}

#[test]
fn shards_merge_into_the_single_run() {
    let whole = toys(&["--n-toys", "120"]);
    let whole_kept = toys(&["--n-toys", "120", "--keep-toys"]);
    let mut files = Vec::new();
    for (i, range) in ["80:40", "0:50", "50:30"].iter().enumerate() {
        let f = tmp(&format!("shard{i}.json"));
        std::fs::write(&f, toys(&["--toy-range", range])).unwrap();
        files.push(f);
    }
    let merge = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_nextstat"))
            .arg("merge-toys")
            .args(&files)
            .arg("--json")
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert_eq!(
        String::from_utf8(merge(&[])).unwrap(),
        String::from_utf8(whole).unwrap()
    );
    assert_eq!(merge(&["--keep-toys"]), whole_kept);

    // a gap is refused
    let out = Command::new(env!("CARGO_BIN_EXE_nextstat"))
        .arg("merge-toys")
        .args(&files[..2])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("contiguous"));
    // shards of another seed are refused
    let other = tmp("other.json");
    std::fs::write(&other, toys(&["--toy-range", "120:10", "--seed", "1"])).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nextstat"))
        .arg("merge-toys")
        .args(&files)
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'seed'"));
}

#[test]
fn says_what_few_toys_can_resolve() {
    // mu = 4 is far excluded: no signal-plus-background toy reaches the observed value.
    let out = Command::new(env!("CARGO_BIN_EXE_nextstat"))
        .args([
            "hypotest-toys",
            "--input",
            &example("counting.json"),
            "--mu",
            "4",
            "--n-toys",
            "100",
            "--json",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = v["resolution"].as_str().expect("a resolution statement");
    assert!(r.contains("CLs <"), "{r}");
    assert!(v["cls_obs_upper_bound"].as_f64().unwrap() > 0.0);
    let table = Command::new(env!("CARGO_BIN_EXE_nextstat"))
        .args([
            "hypotest-toys",
            "--input",
            &example("counting.json"),
            "--mu",
            "4",
            "--n-toys",
            "100",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).contains("CLs    observed  <"));
}
