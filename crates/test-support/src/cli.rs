//! The command line's failure contract, shared by every test that runs the `anychip` binary.

use std::process::Output;

/// Exit code 2, exactly one non-empty stderr line starting with "error:" and containing
/// `must_contain`, no panic.
pub fn assert_clean_failure(o: &Output, must_contain: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(must_contain), "'{must_contain}' not in: {err}");
}
