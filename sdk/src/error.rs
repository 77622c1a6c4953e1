//! The error of exports, flushes and shutdowns: shared by the span path (a flush
//! awaited when a span ends) and the export pipeline, so it sits below both.

use std::fmt;

/// Why an export, flush or shutdown did not succeed.
#[derive(Debug)]
pub struct ExportError {
    kind: ErrorKind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Export,
    Timeout,
    ShutDown,
}

impl ExportError {
    /// An export failure described by `message`.
    pub fn new(message: impl fmt::Display) -> Self {
        ExportError {
            kind: ErrorKind::Export,
            message: message.to_string(),
        }
    }
    /// The deadline passed first.
    pub fn timeout() -> Self {
        ExportError {
            kind: ErrorKind::Timeout,
            message: "deadline exceeded".into(),
        }
    }
    /// The pipeline was already shut down.
    pub fn shut_down() -> Self {
        ExportError {
            kind: ErrorKind::ShutDown,
            message: "already shut down".into(),
        }
    }
    /// Whether the deadline passed first.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }
    /// Whether the pipeline was already shut down.
    pub fn is_shut_down(&self) -> bool {
        self.kind == ErrorKind::ShutDown
    }
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExportError {}
