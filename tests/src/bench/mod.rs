//! `make bench`: figures measured on the local control plane, Knot and Postfix, printed as
//! a table and written to `bench/results.json` with the machine's facts and the commit.
//! Nothing here is a pass/fail test: a missed target is printed, not asserted.

pub mod cluster;
pub mod drift;
pub mod maps;
pub mod outage;
pub mod recipients;
pub mod sources;

use serde::Serialize;
use std::time::Duration;

/// How big the runs are: `Full` is what the note quotes, `Smoke` proves the bench works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    Smoke,
    Full,
}

/// A memory figure of `/proc/<process>/status` (`VmRSS:`, `VmHWM:`) in MiB; `process` is
/// a pid or `self`.
pub fn memory_mib(process: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub section: &'static str,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// The target, in words, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
}

impl Figure {
    pub fn new(
        section: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Self {
        Self {
            section,
            name: name.into(),
            value,
            unit,
            target: None,
            met: None,
        }
    }

    /// A target of at most `limit`.
    pub fn at_most(mut self, limit: f64) -> Self {
        self.target = Some(format!("≤ {limit} {}", self.unit).trim_end().to_string());
        self.met = Some(self.value <= limit);
        self
    }
}

/// min / median / p99 / max of a sample, in the order given.
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(samples: &[Duration]) -> Self {
        let mut values: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if values.is_empty() {
                return f64::NAN;
            }
            // Nearest rank: the smallest value with at least q of the sample at or below it.
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[rank - 1]
        };
        Self {
            min: at(0.0),
            median: at(0.5),
            p99: at(0.99),
            max: values.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// Figures `<name> min|p50|p99|max`, in `unit` seconds or milliseconds.
    pub fn figures(&self, section: &'static str, name: &str, millis: bool) -> Vec<Figure> {
        let (scale, unit) = if millis { (1000.0, "ms") } else { (1.0, "s") };
        [
            ("min", self.min),
            ("p50", self.median),
            ("p99", self.p99),
            ("max", self.max),
        ]
        .into_iter()
        .map(|(label, value)| Figure::new(section, format!("{name} {label}"), value * scale, unit))
        .collect()
    }
}

/// The figures as an aligned table.
pub fn table(figures: &[Figure]) -> String {
    let mut out = String::new();
    let mut section = "";
    let width = figures
        .iter()
        .map(|f| f.name.chars().count())
        .max()
        .unwrap_or(0);
    for figure in figures {
        if figure.section != section {
            section = figure.section;
            out.push_str(&format!("\n{section}\n"));
        }
        let value = if figure.value.abs() >= 100.0 || figure.value.fract() == 0.0 {
            format!("{:.0}", figure.value)
        } else {
            format!("{:.3}", figure.value)
        };
        let verdict = match (&figure.target, figure.met) {
            (Some(target), Some(true)) => format!("  target {target}: met"),
            (Some(target), Some(false)) => format!("  target {target}: MISSED"),
            _ => String::new(),
        };
        out.push_str(&format!(
            "  {:width$}  {:>12} {:<5}{verdict}\n",
            figure.name, value, figure.unit
        ));
    }
    out
}

/// Facts about the machine the figures were measured on.
pub fn machine() -> serde_json::Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let memory_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "memory_gib": (memory_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_uses_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_secs).collect();
        let spread = Spread::of(&samples);
        assert_eq!(
            (spread.min, spread.median, spread.p99, spread.max),
            (1.0, 50.0, 99.0, 100.0)
        );
        let one = Spread::of(&[Duration::from_millis(250)]);
        assert_eq!((one.median, one.p99), (0.25, 0.25));
    }

    #[test]
    fn targets_are_judged() {
        assert_eq!(Figure::new("s", "x", 2.0, "s").at_most(3.0).met, Some(true));
        assert_eq!(
            Figure::new("s", "x", 4.0, "s").at_most(3.0).met,
            Some(false)
        );
    }
}
