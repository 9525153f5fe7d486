//! Configuration errors: every one names the file and the field path, so an
//! operator can go straight to the line that is wrong.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigError {
    /// The file as the operator named it (not canonicalised, so it reads as typed).
    pub file: PathBuf,
    /// Dotted path to the offending field, e.g. `tenants.acme.pricing.credit.module`;
    /// empty when the problem is the file as a whole.
    pub field: String,
    /// What is wrong, in one sentence.
    pub message: String,
}

impl ConfigError {
    /// An error at `field` of `file`.
    pub fn new(file: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// A serde_yaml error. Its text is `<path>: <message> at line L column C`
    /// (the path is left out at the root); split it so the field is structured.
    pub(crate) fn from_yaml(file: &Path, err: &serde_yaml::Error) -> Self {
        let text = err.to_string();
        match text.split_once(": ") {
            Some((path, rest)) if !path.is_empty() && !path.contains(char::is_whitespace) => {
                ConfigError::new(file, path, rest)
            }
            _ => ConfigError::new(file, "", text),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.field,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Everything wrong with a configuration: validation reports all problems at
/// once rather than making the operator fix them one reload at a time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// No errors yet.
    pub fn new() -> Self {
        ConfigErrors(Vec::new())
    }

    /// Record one error.
    pub fn push(&mut self, err: ConfigError) {
        self.0.push(err);
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was recorded, else all the errors.
    pub fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// The errors.
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(err: ConfigError) -> Self {
        ConfigErrors(vec![err])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.len() {
            0 => f.write_str("no configuration errors"),
            1 => write!(f, "{}", self.0[0]),
            n => {
                write!(f, "{n} configuration errors:")?;
                for err in &self.0 {
                    write!(f, "\n  {err}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}
