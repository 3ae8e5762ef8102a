//! What the progress bar says while a job runs: the rate of URLs finished since the bar
//! started (resumed URLs are not new work) and an ETA that says "unknown" until there is
//! a rate to go by.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over a job's URLs whose message is the live rate and ETA.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    b.set_prefix(what.to_string());
    b
}

/// URLs finished since the first reading, over the time since then.
pub struct Rate {
    first_done: i64,
    since: Instant,
}

impl Rate {
    pub fn new(done: i64) -> Self {
        Rate { first_done: done, since: Instant::now() }
    }

    /// URLs per second finished since the first reading; `None` before any finished.
    pub fn per_second(&self, done: i64) -> Option<f64> {
        let new = done - self.first_done;
        let secs = self.since.elapsed().as_secs_f64();
        (new > 0 && secs > 0.0).then(|| new as f64 / secs)
    }

    /// "12.3 URLs/s, eta 41s", or "eta unknown" while nothing has finished.
    pub fn describe(&self, done: i64, total: i64) -> String {
        match self.per_second(done) {
            Some(r) => {
                let left = (total - done).max(0) as f64;
                format!("{} URLs/s, eta {}", rate(r), eta(Duration::from_secs_f64(left / r)))
            }
            None => "eta unknown".to_string(),
        }
    }
}

/// How often a log gets a progress line while URLs finish.
const LINE_EVERY: Duration = Duration::from_secs(10);

/// Progress as plain lines where the bar draws nothing (stderr a file or a pipe: CI logs,
/// `nohup`, systemd): the first reading, then a line per `LINE_EVERY` while URLs finish, and
/// the last.
pub struct Lines {
    on: bool,
    last: Option<(Instant, i64)>,
}

impl Lines {
    pub fn new(quiet: bool) -> Self {
        use std::io::IsTerminal;
        Lines { on: !quiet && !std::io::stderr().is_terminal(), last: None }
    }

    pub fn note(&mut self, what: &str, done: i64, total: i64, rate: &Rate) {
        let due = match self.last {
            None => true,
            Some((at, was)) => was != done && (done >= total || at.elapsed() >= LINE_EVERY),
        };
        if self.on && due {
            eprintln!("{what} {done}/{total} URLs, {}", rate.describe(done, total));
            self.last = Some((Instant::now(), done));
        }
    }
}

/// "1 URL", "3 URLs".
pub fn urls(n: impl Into<i64>) -> String {
    count(n.into(), "URL")
}

/// "1 face", "0 faces": `what` with an `s` unless there is one.
pub fn count(n: i64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A rate with sensible digits: 0.42, 7.5, 1234.
pub fn rate(r: f64) -> String {
    match r {
        r if r < 1.0 => format!("{r:.2}"),
        r if r < 100.0 => format!("{r:.1}"),
        r => format!("{r:.0}"),
    }
}

/// 41s, 3m05s, 2h07m.
fn eta(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumed_urls_are_not_a_rate_and_eta_is_unknown_until_one_finishes() {
        let r = Rate::new(250);
        assert_eq!(r.per_second(250), None);
        assert_eq!(r.describe(250, 400), "eta unknown");
        std::thread::sleep(Duration::from_millis(20));
        let per = r.per_second(260).expect("ten finished");
        assert!(per > 0.0 && per < 10.0 / 0.02 + 1.0, "{per}");
        assert!(r.describe(260, 400).contains("eta "), "{}", r.describe(260, 400));
    }

    #[test]
    fn rates_and_etas_read_well() {
        assert_eq!(rate(0.4213), "0.42");
        assert_eq!(rate(7.54), "7.5");
        assert_eq!(rate(1234.4), "1234");
        assert_eq!(rate(182_145.681_7), "182146");
        assert_eq!((urls(1), urls(0), urls(3)), ("1 URL".into(), "0 URLs".into(), "3 URLs".into()));
        assert_eq!(eta(Duration::from_secs(41)), "41s");
        assert_eq!(eta(Duration::from_secs(185)), "3m05s");
        assert_eq!(eta(Duration::from_secs(7620)), "2h07m");
    }
}
