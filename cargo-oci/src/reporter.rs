//! Human messages on stderr, in cargo's style (`   Packaging name`); stdout is left to results.

use std::io::IsTerminal;

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
}

impl Reporter {
    pub fn new(verbosity: Verbosity) -> Self {
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Reporter { verbosity, color }
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
}
