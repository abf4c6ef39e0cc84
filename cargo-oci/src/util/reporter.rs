//! Human messages on stderr, in cargo's style (`   Packaging name`), and progress of long work;
//! stdout is left to results. Progress bars (indicatif) are drawn only when stderr is a
//! terminal; otherwise each piece of work ends with one plain line. `-q` silences both.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// Prints progress and notes to stderr.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub verbosity: Verbosity,
    color: bool,
    terminal: bool,
}

impl Reporter {
    pub fn new(verbosity: Verbosity) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let color = terminal && std::env::var_os("NO_COLOR").is_none();
        Reporter {
            verbosity,
            color,
            terminal,
        }
    }

    /// Colours on (`--color always`) or off (`--color never`), whatever stderr is.
    pub fn with_color(mut self, on: bool) -> Self {
        self.color = on;
        self
    }

    /// A step, as cargo prints them: a right-aligned green verb, then what.
    pub fn status(&self, verb: &str, what: &str) {
        if self.verbosity >= Verbosity::Normal {
            if self.color {
                eprintln!("\x1b[1;32m{verb:>12}\x1b[0m {what}");
            } else {
                eprintln!("{verb:>12} {what}");
            }
        }
    }

    /// Detail shown with `-v`.
    pub fn detail(&self, what: &str) {
        if self.verbosity >= Verbosity::Verbose {
            eprintln!("{:>12} {what}", "");
        }
    }

    /// A warning, shown unless `-q`.
    pub fn warn(&self, what: &str) {
        if self.verbosity >= Verbosity::Normal {
            if self.color {
                eprintln!("\x1b[1;33mwarning\x1b[0m: {what}");
            } else {
                eprintln!("warning: {what}");
            }
        }
    }

    /// Starts tracking a piece of work measured in bytes (`verb` as in [`Reporter::status`],
    /// e.g. `Compressing`, `Pushing`; `what` names the thing; `total` when known). On a terminal
    /// a bar shows the bytes done, the total and the rate; it is replaced by one line when the
    /// work ends ([`Progress::finish`]).
    pub fn progress(&self, verb: &str, what: &str, total: Option<u64>) -> Progress {
        let drawn = self.terminal && self.verbosity >= Verbosity::Normal;
        let bar = if drawn {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr_with_hz(10));
            let template = match (total.is_some(), self.color) {
                (true, true) => "{prefix:>12.cyan.bold} {msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
                (true, false) => "{prefix:>12} {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
                (false, true) => "{prefix:>12.cyan.bold} {msg} {spinner} {bytes} {binary_bytes_per_sec}",
                (false, false) => "{prefix:>12} {msg} {spinner} {bytes} {binary_bytes_per_sec}",
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(verb.to_string());
            bar.set_message(what.to_string());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        } else {
            ProgressBar::hidden()
        };
        if !drawn {
            self.detail(&format!(
                "{} {what}{}",
                verb.to_lowercase(),
                total
                    .map(|t| format!(" ({})", HumanBytes(t)))
                    .unwrap_or_default()
            ));
        }
        Progress {
            bar,
            reporter: self.clone(),
        }
    }
}

/// A piece of work being tracked; see [`Reporter::progress`]. Dropping it unfinished clears
/// its bar and prints nothing.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    reporter: Reporter,
}

impl Progress {
    /// Counts `n` more bytes done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Sets how many bytes are done (when another counter keeps them).
    pub fn set_position(&self, n: u64) {
        self.bar.set_position(n);
    }

    /// Bytes done so far.
    pub fn done(&self) -> u64 {
        self.bar.position()
    }

    /// Time since the work started.
    pub fn elapsed(&self) -> Duration {
        self.bar.elapsed()
    }

    /// Says what the work is doing now (e.g. waiting for the other end once every byte is sent).
    pub fn set_message(&self, what: &str) {
        self.bar.set_message(what.to_string());
    }

    /// Counts the bytes written through `w`.
    pub fn writer<W: Write>(&self, w: W) -> impl Write {
        self.bar.wrap_write(w)
    }

    /// Counts the bytes read through `r`.
    pub fn reader<R: Read>(&self, r: R) -> impl Read {
        self.bar.wrap_read(r)
    }

    /// Ends the work: the bar (if any) disappears and one status line says how it went.
    pub fn finish(self, verb: &str, what: &str) {
        self.bar.finish_and_clear();
        self.reporter.status(verb, what);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

/// Bytes for people: `1.02 MiB`.
pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}
