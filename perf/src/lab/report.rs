//! The lab report: one row per check, printed as a Markdown table or serialised as JSON.

use serde::{Deserialize, Serialize};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The check ran and succeeded.
    Pass,
    /// The check ran and failed (or could not run because of an error).
    Fail,
    /// The check did not run (a program is missing, the variant does not apply).
    Skipped,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "FAIL",
            Self::Skipped => "skipped",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked ("DHCP address", "ping RTT", "broadcast", ...).
    pub check: String,
    /// Between whom ("c1", "c1 -> host1").
    pub path: String,
    /// The outcome.
    pub status: Status,
    /// The main number, if the check measures one (in `unit`).
    pub value: Option<f64>,
    /// Unit of `value` ("ms", "Gbit/s", "pps").
    pub unit: Option<String>,
    /// Human-readable result or error.
    pub detail: String,
}

impl Check {
    /// A passed check with a detail line.
    pub fn pass(check: &str, path: &str, detail: impl Into<String>) -> Self {
        Self {
            check: check.to_owned(),
            path: path.to_owned(),
            status: Status::Pass,
            value: None,
            unit: None,
            detail: detail.into(),
        }
    }

    /// A failed check with what went wrong.
    pub fn fail(check: &str, path: &str, detail: impl Into<String>) -> Self {
        Self {
            status: Status::Fail,
            ..Self::pass(check, path, detail)
        }
    }

    /// A skipped check with the reason.
    pub fn skipped(check: &str, path: &str, detail: impl Into<String>) -> Self {
        Self {
            status: Status::Skipped,
            ..Self::pass(check, path, detail)
        }
    }

    /// Attaches the measured number.
    #[must_use]
    pub fn with_value(mut self, value: f64, unit: &str) -> Self {
        self.value = Some(value);
        self.unit = Some(unit.to_owned());
        self
    }
}

/// The results of one lab run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `direct` or `tunnel`.
    pub variant: String,
    /// Notes about the run (fallbacks taken, programs missing).
    pub notes: Vec<String>,
    /// One row per check, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// An empty report for `variant`.
    pub fn new(variant: &str) -> Self {
        Self {
            variant: variant.to_owned(),
            notes: Vec::new(),
            checks: Vec::new(),
        }
    }

    /// Whether no check failed.
    pub fn all_passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// The first check named `check` on `path`.
    pub fn find(&self, check: &str, path: &str) -> Option<&Check> {
        self.checks
            .iter()
            .find(|c| c.check == check && c.path == path)
    }

    /// The report as a Markdown table (`|` in cells escaped), followed by the notes.
    pub fn to_markdown(&self) -> String {
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let mut out = format!("## softlan lab ({})\n\n", cell(&self.variant));
        out.push_str("| check | path | result | detail |\n|---|---|---|---|\n");
        for c in &self.checks {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                cell(&c.check),
                cell(&c.path),
                c.status.label(),
                cell(&c.detail)
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("\n- {}", cell(n)));
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        out
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report::new("direct");
        r.checks
            .push(Check::pass("DHCP address", "c1", "198.18.0.150/24"));
        r.checks
            .push(Check::pass("ping RTT", "c1 -> host1", "median 0.05 ms").with_value(0.05, "ms"));
        r.checks.push(Check::fail(
            "broadcast",
            "host1 -> c1",
            "not received | lost",
        ));
        r.notes.push("iperf3 missing".into());
        r
    }

    #[test]
    fn markdown_has_one_row_per_check_and_escapes_pipes() {
        let md = sample().to_markdown();
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 4, "{md}");
        assert!(rows[1].contains("| DHCP address | c1 | pass | 198.18.0.150/24 |"));
        assert!(rows[3].contains("FAIL"));
        assert!(rows[3].contains("not received \\| lost"));
        assert!(md.contains("- iperf3 missing"));
    }

    #[test]
    fn json_round_trips() {
        let r = sample();
        let back: Report = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
        assert!(r.to_json().contains("\"status\": \"fail\""));
        assert!(!r.all_passed());
        assert_eq!(r.find("ping RTT", "c1 -> host1").unwrap().value, Some(0.05));
    }
}
