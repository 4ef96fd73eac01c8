//! Report rows, the printed table and the JSON report.

use anychip_port::Capabilities;
use serde::Serialize;
use std::str::FromStr;

/// A conformance level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Level {
    L0,
    L1,
    L2,
    L3,
    L4,
    L5,
}

impl Level {
    /// Every level in order.
    pub const ALL: [Level; 6] = [Level::L0, Level::L1, Level::L2, Level::L3, Level::L4, Level::L5];
    /// Levels L0 through `self`.
    pub fn up_to(self) -> Vec<Level> {
        Level::ALL.into_iter().filter(|l| *l <= self).collect()
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        match s.to_ascii_uppercase().as_str() {
            "L0" | "0" => Ok(Level::L0),
            "L1" | "1" => Ok(Level::L1),
            "L2" | "2" => Ok(Level::L2),
            "L3" | "3" => Ok(Level::L3),
            "L4" | "4" => Ok(Level::L4),
            "L5" | "5" | "ALL" => Ok(Level::L5),
            _ => Err(format!("unknown level '{s}'; use L0, L1, L2, L3, L4, L5 or all")),
        }
    }
}

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// The port reports it cannot run this (dtype or op): not a failure.
    Unsupported,
    /// A measurement (L5): never fails.
    Info,
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub level: Level,
    pub op: String,
    pub dtype: String,
    pub case: String,
    pub max_abs_err: f64,
    pub max_rel_err: f64,
    pub tolerance: String,
    pub status: Status,
    /// Why it failed or was unsupported, or the measurement.
    pub note: String,
}

/// The whole suite's outcome for one port.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub port: String,
    pub device: String,
    /// Composites the port runs with its own fused kernels.
    pub overridden_composites: Vec<String>,
    pub rows: Vec<Row>,
}

impl Report {
    /// An empty report for a port.
    pub fn new(port: &str, caps: &Capabilities) -> Report {
        Report {
            port: port.into(),
            device: caps.device.clone(),
            overridden_composites: caps.fused.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }
    /// True when no row failed.
    pub fn passed(&self) -> bool {
        !self.rows.iter().any(|r| r.status == Status::Fail)
    }
    /// Count of rows with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.rows.iter().filter(|r| r.status == status).count()
    }
    fn table(&self, rows: &[&Row]) -> String {
        let mut s = format!(
            "{:<3} {:<26} {:<5} {:<34} {:>10} {:>10} {:<18} {}\n",
            "lvl", "op", "dtype", "case", "max abs", "max rel", "tolerance", "status"
        );
        for r in rows {
            let st = match r.status {
                Status::Pass => "pass".to_string(),
                Status::Fail => format!("FAIL {}", r.note),
                Status::Unsupported => format!("unsupported {}", r.note),
                Status::Info => r.note.clone(),
            };
            s += &format!(
                "{:<3} {:<26} {:<5} {:<34} {:>10.2e} {:>10.2e} {:<18} {}\n",
                format!("{:?}", r.level),
                r.op,
                r.dtype,
                r.case,
                r.max_abs_err,
                r.max_rel_err,
                r.tolerance,
                st
            );
        }
        s
    }
    /// The full table.
    pub fn print_table(&self) -> String {
        let rows: Vec<&Row> = self.rows.iter().collect();
        let mut s = format!("conformance of port '{}' [{}]\n", self.port, self.device);
        if !self.overridden_composites.is_empty() {
            s += &format!("fused (overridden) composites: {}\n", self.overridden_composites.join(", "));
        }
        s += &self.table(&rows);
        s += &format!(
            "{} passed, {} failed, {} unsupported\n",
            self.count(Status::Pass),
            self.count(Status::Fail),
            self.count(Status::Unsupported)
        );
        s
    }
    /// Only the failing rows.
    pub fn failures_table(&self) -> String {
        let rows: Vec<&Row> = self.rows.iter().filter(|r| r.status == Status::Fail).collect();
        self.table(&rows)
    }
    /// The JSON report.
    pub fn to_json(&self) -> String {
        // Strings and numbers only (non-finite ones become null): serialising cannot fail, but
        // if it ever did the suite still would not panic.
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"port\": {:?}, \"error\": {:?}}}", self.port, e.to_string()))
    }
}
