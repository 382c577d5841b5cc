//! A one-line progress display on stderr, redrawn at most ten times a
//! second: count, rate and, when the total is known, a bar.

use std::io::Write;
use std::time::{Duration, Instant};

const REDRAW: Duration = Duration::from_millis(100);
const BAR_WIDTH: usize = 30;

pub struct Progress {
    enabled: bool,
    unit: &'static str,
    start: Instant,
    last_draw: Option<Instant>,
    drawn: bool,
}

impl Progress {
    /// A display counting `unit`s (shown only when `enabled`).
    pub fn new(enabled: bool, unit: &'static str) -> Self {
        Progress {
            enabled,
            unit,
            start: Instant::now(),
            last_draw: None,
            drawn: false,
        }
    }

    /// Reports `count` units done and, when known, the fraction of the
    /// whole job done.
    pub fn update(&mut self, count: u64, fraction: Option<f64>) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self.last_draw.is_some_and(|t| now.duration_since(t) < REDRAW) {
            return;
        }
        self.last_draw = Some(now);
        self.draw(count, fraction);
    }

    /// Draws the final state and ends the line.
    pub fn finish(&mut self, count: u64, fraction: Option<f64>) {
        if !self.enabled {
            return;
        }
        self.draw(count, fraction);
        let _ = writeln!(std::io::stderr());
        self.drawn = false;
    }

    fn draw(&mut self, count: u64, fraction: Option<f64>) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = count as f64 / secs;
        let mut line = String::new();
        if let Some(f) = fraction {
            let f = f.clamp(0.0, 1.0);
            let filled = (f * BAR_WIDTH as f64).round() as usize;
            line.push_str(&format!(
                "[{}{}] {:3.0}% ",
                "#".repeat(filled),
                "-".repeat(BAR_WIDTH - filled),
                f * 100.0
            ));
        }
        let label = if count == 1 {
            self.unit.trim_end_matches('s')
        } else {
            self.unit
        };
        line.push_str(&format!("{count} {label} ({rate:.0} {}/s, {secs:.1}s)", self.unit));
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line:<78}");
        let _ = err.flush();
        self.drawn = true;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.enabled && self.drawn {
            // Leave the line so an error message starts on its own line.
            let _ = writeln!(std::io::stderr());
        }
    }
}
