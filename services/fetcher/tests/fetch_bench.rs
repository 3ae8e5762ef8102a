//! `facesweep-fetch-bench`: the fetch tier's bench without LibTorch (what `make bench-fetch`
//! runs), end to end on a real list.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_facesweep-fetch-bench");

#[test]
fn links_no_torch_library() {
    // Its point: the CLI's ~0.3 s of LibTorch start-up is not in the fetch tier's figures.
    let ldd = Command::new("ldd").arg(BIN).output().expect("ldd (libc-bin)");
    let libs = String::from_utf8_lossy(&ldd.stdout);
    assert!(ldd.status.success() && libs.contains("libc.so"), "{libs}");
    assert!(!libs.contains("torch") && !libs.contains("libc10"), "links LibTorch:\n{libs}");
}

#[test]
fn fetches_a_list_and_counts_every_url_once() {
    // Loopback is outside the default address policy: both URLs fail as blocked, none is lost.
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, "http://127.0.0.1:9/a.jpg\n\n# comment\nhttp://127.0.0.1:9/b.jpg\n").unwrap();
    let out = Command::new(BIN).arg("fetch").arg(&list).current_dir(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}{err}");
    assert!(text.contains("fetched 0 ok, 2 failed"), "{text}");
    assert!(err.contains("blocked"), "failures by class: {err}");
}

#[test]
fn a_bad_fetcher_flag_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, "http://127.0.0.1:9/a.jpg\n").unwrap();
    let out = Command::new(BIN).arg("fetch").arg(&list).args(["--", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}
