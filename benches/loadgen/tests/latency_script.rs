//! `benches/harness/latency.sh` end to end: the real `loadgen` binary against two in-process servers,
//! one answering at once ("direct") and one that holds every response for 3 ms (a "proxy").

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{Action, TestServer};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../harness/latency.sh")
}

fn have_python() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn prints_added_latency_per_rate_and_target() {
    assert!(have_python(), "latency.sh needs python3");
    let direct = TestServer::start(|_| Action::Ok);
    let proxy = TestServer::start(|_| Action::Stall(Duration::from_millis(3)));
    let outdir = std::env::temp_dir().join(format!("meshcap-latency-sh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&outdir);
    let output = Command::new("bash")
        .arg(script())
        .args([
            "--throughput",
            "400",
            "--fractions",
            "0.25 0.5",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
        ])
        .args([
            "--connections",
            "4",
            "--rounds",
            "2",
            "--loadgen",
            env!("CARGO_BIN_EXE_loadgen"),
        ])
        .arg("--outdir")
        .arg(&outdir)
        .args(["direct", "", &direct.url(), "slow", "env", &proxy.url()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    println!("{stdout}");

    // The table on stdout: a header and 2 rates × 2 targets.
    let table: Vec<&str> = stdout.lines().collect();
    assert_eq!(table.len(), 5, "{stdout}");
    assert!(
        table[0].starts_with("rate  target  p50 ms  p99 ms  p99.9 ms  added p50 ms"),
        "{stdout}"
    );
    // The same figures, tab-separated, in summary.tsv.
    let summary = std::fs::read_to_string(outdir.join("summary.tsv")).unwrap();
    let mut rows = summary.lines().map(|l| l.split('\t').collect::<Vec<_>>());
    let header = rows.next().unwrap();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    let rows: Vec<Vec<&str>> = rows.collect();
    let expected = [("100", "direct"), ("100", "slow"), ("200", "direct"), ("200", "slow")];
    assert_eq!(rows.len(), expected.len(), "{summary}");
    for (row, (rate, target)) in rows.iter().zip(expected) {
        assert_eq!(
            (row[column("rate")], row[column("target")]),
            (rate, target),
            "{summary}"
        );
        assert!(
            table
                .iter()
                .any(|line| line.split_whitespace().take(2).eq([rate, target])),
            "{stdout}"
        );
        assert_eq!(row[column("errors")], "0", "{summary}");
        let p50: f64 = row[column("p50 ms")].parse().unwrap();
        let added: Vec<&str> = ["added p50 ms", "added p99 ms", "added p99.9 ms"]
            .map(|c| row[column(c)])
            .to_vec();
        if target == "direct" {
            assert_eq!(added, ["-", "-", "-"], "the baseline adds nothing to itself");
        } else {
            // Every response of the slow target took 3 ms at least.
            assert!(p50 >= 3.0, "slow p50 {p50} ms");
            for value in added {
                assert!(value.starts_with(['+', '-']), "added latency `{value}`");
                let _: f64 = value.parse().unwrap();
            }
        }
    }
    // Two rounds × two rates × two targets of raw JSON, and the summary.
    let runs = std::fs::read_to_string(outdir.join("runs.tsv")).unwrap();
    assert_eq!(runs.lines().count(), 1 + 8);
    for line in runs.lines().skip(1) {
        let file = line.split('\t').nth(4).unwrap();
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        assert_eq!(report["errors"], 0);
    }
    std::fs::remove_dir_all(&outdir).unwrap();
}

#[test]
fn rejects_bad_arguments() {
    let run = |args: &[&str]| {
        let out = Command::new("bash").arg(script()).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["--throughput", "100", "direct", "", "http://127.0.0.1:1/"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("expected at least two NAME PREFIX URL triples"), "{err}");
    let (code, err) = run(&["a", "", "http://127.0.0.1:1/", "b", "", "http://127.0.0.1:2/"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("give --throughput"), "{err}");
    let (code, err) = run(&[
        "--rates",
        "10 x",
        "a",
        "",
        "http://127.0.0.1:1/",
        "b",
        "",
        "http://127.0.0.1:2/",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("invalid rate 'x'"), "{err}");
    let (code, err) = run(&["--rates", "10", "a", "", "u", "a", "", "u"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("target name 'a' given twice"), "{err}");
    let out = Command::new("bash").arg(script()).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("NAME PREFIX URL"));
}
