//! Errors of sweep files: always the file, the line and the key at fault.

use std::fmt;

/// A sweep file that cannot be used, located to the line and key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepError {
    /// File name (or `<input>`).
    pub file: String,
    /// 1-based line, when the error has a place in the text.
    pub line: Option<usize>,
    /// Dotted key at fault, e.g. `grid.lr` or `exclude[1].loss`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for SweepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SweepError {}

/// Converts byte offsets into 1-based line numbers.
pub(crate) struct Lines<'a> {
    pub text: &'a str,
    pub file: &'a str,
}

impl Lines<'_> {
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    pub fn err(
        &self,
        offset: Option<usize>,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> SweepError {
        SweepError {
            file: self.file.to_owned(),
            line: offset.map(|o| self.line_of(o)),
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }
}
