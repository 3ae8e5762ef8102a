//! `facesweep run` in a real terminal (tmux): on a slow site the bar advances URL by URL
//! and the run ends with its summary on screen.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use facesweep_cli::httpserve::{serve, Routes};

const URLS: usize = 10;
/// URL i answers after i × STEP, so results finish one by one over ~7 s.
const STEP: Duration = Duration::from_millis(700);

/// A tmux server of this test's own (its own socket), killed on drop.
struct Tmux(String);

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-L").arg(&self.0);
        c
    }

    fn screen(&self) -> String {
        let out = self.cmd().args(["capture-pane", "-p", "-t", "run"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// Every "N/10" the bar showed on `screen`.
fn positions(screen: &str) -> impl Iterator<Item = usize> + '_ {
    screen.split_whitespace().filter_map(|w| w.strip_suffix(&format!("/{URLS}"))?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bar_moves_per_url_and_the_run_ends_with_a_summary() {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is needed for this test (scripts/setup.sh installs it)");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let photo = std::fs::read(facesweep_cli::default_samples_dir().join("grace_hopper.jpg")).unwrap();
    let mut routes = Routes::default();
    for i in 0..URLS {
        routes.add_slow(&format!("/p{i}.jpg"), "image/jpeg", photo.clone(), STEP * i as u32);
    }
    let (addr, _site) = serve(routes).await.unwrap();
    let tmp = tempfile::Builder::new().prefix("facesweep-tty").tempdir_in("/tmp").unwrap();
    let list = tmp.path().join("slow.txt");
    let urls: Vec<String> = (0..URLS).map(|i| format!("http://{addr}/p{i}.jpg")).collect();
    std::fs::write(&list, urls.join("\n")).unwrap();

    let model = root.join("models/retinaface_mnet025.pt");
    let run = format!(
        "cd {dir} && FACESWEEP_MODEL={model} RUST_LOG=warn {bin} run {list} --out out.jsonl \
         --data-dir data; echo EXIT=$?; sleep 120",
        dir = tmp.path().display(),
        model = model.display(),
        bin = env!("CARGO_BIN_EXE_facesweep"),
        list = list.display(),
    );
    let tmux = Tmux(format!("facesweep-test-{}", std::process::id()));
    let started = tmux.cmd().args(["new-session", "-d", "-s", "run", "-x", "150", "-y", "20", &run]).status();
    assert!(started.unwrap().success(), "tmux new-session");

    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    let screen = loop {
        let screen = tmux.screen();
        seen.extend(positions(&screen));
        if screen.contains("EXIT=") {
            break screen;
        }
        assert!(Instant::now() < deadline, "run did not end within 180 s; screen:\n{screen}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    assert!(screen.contains("EXIT=0"), "run failed:\n{screen}");
    assert!(screen.contains(&format!("job slow: {URLS} URLs")), "no summary on screen:\n{screen}");
    let between: Vec<usize> = seen.iter().copied().filter(|n| (1..URLS).contains(n)).collect();
    assert!(between.len() >= 3, "the bar jumped instead of moving per URL: showed {seen:?}\n{screen}");
    println!("the bar showed {seen:?}");
}
