//! Errors that are the user's to fix (bad configuration or usage), told apart from failures so
//! that the command exits with 2 for them and 1 for everything else.

use std::fmt;

/// A usage or configuration error: what is wrong and where, plus how to fix it.
#[derive(Debug, Clone)]
pub struct UsageError {
    message: String,
    hint: Option<String>,
}

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        UsageError {
            message: message.into(),
            hint: None,
        }
    }

    /// Adds how to fix it.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UsageError {}

/// An error as one JSON object (`--message-format json`): `reason: "error"`, the message, the
/// help line (or null), the causes and the exit code the process ends with.
pub fn to_json(err: &anyhow::Error) -> serde_json::Value {
    let text = |e: &(dyn std::error::Error + 'static)| match e.downcast_ref::<UsageError>() {
        Some(u) => u.message.clone(),
        None => e.to_string(),
    };
    let mut chain = err.chain();
    let message = chain.next().map(text).unwrap_or_default();
    let causes: Vec<String> = chain.map(text).collect();
    let help = err
        .chain()
        .find_map(|c| c.downcast_ref::<UsageError>().and_then(|u| u.hint.clone()));
    serde_json::json!({
        "reason": "error",
        "message": message,
        "help": help,
        "causes": causes,
        "exit_code": exit_code(err),
    })
}

/// The process exit code for an error chain: 2 when any cause is a [`UsageError`], else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err
        .chain()
        .any(|c| c.downcast_ref::<UsageError>().is_some())
    {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_carry_message_help_and_exit_code() {
        let e = anyhow::Error::new(UsageError::new("bad `x`").hint("fix x"))
            .context("cannot configure");
        let j = to_json(&e);
        assert_eq!(j["reason"], "error");
        assert_eq!(j["message"], "cannot configure");
        assert_eq!(j["causes"][0], "bad `x`");
        assert_eq!(j["help"], "fix x");
        assert_eq!(j["exit_code"], 2);
        let j = to_json(&anyhow::anyhow!("network down"));
        assert_eq!(j["message"], "network down");
        assert!(j["help"].is_null());
        assert_eq!(j["exit_code"], 1);
    }
}
