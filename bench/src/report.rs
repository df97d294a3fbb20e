//! What every scenario reports: summaries of timings, a plain-text table, JSON.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

/// min / p50 / p95 / p99 / max / mean of a set of durations, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// None for an empty set. Percentiles are nearest-rank (always a measured value).
    pub fn of(samples: &[Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Some(Self {
            count: ms.len(),
            min: ms[0],
            p50: percentile(&ms, 50.0),
            p95: percentile(&ms, 95.0),
            p99: percentile(&ms, 99.0),
            max: ms[ms.len() - 1],
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "count": self.count,
            "min_ms": round3(self.min),
            "p50_ms": round3(self.p50),
            "p95_ms": round3(self.p95),
            "p99_ms": round3(self.p99),
            "max_ms": round3(self.max),
            "mean_ms": round3(self.mean),
        })
    }
}

/// Nearest-rank percentile of sorted values: the smallest value with at least
/// `p`% of the values at or below it.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// Durations as milliseconds for JSON.
pub fn samples_ms(samples: &[Duration]) -> Value {
    samples
        .iter()
        .map(|d| round3(d.as_secs_f64() * 1e3))
        .collect()
}

/// A plain-text table: the first column left-aligned, the others right-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i == 0 {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    out.push_str(&line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Milliseconds with a precision that suits their size.
pub fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 1000.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// The row of a latency table: name, count, p50, p95, p99, max, mean.
pub fn latency_row(name: &str, s: &Summary) -> Vec<String> {
    vec![
        name.to_owned(),
        s.count.to_string(),
        fmt_ms(s.p50),
        fmt_ms(s.p95),
        fmt_ms(s.p99),
        fmt_ms(s.max),
        fmt_ms(s.mean),
    ]
}

pub const LATENCY_HEADER: [&str; 7] = ["ms", "n", "p50", "p95", "p99", "max", "mean"];

/// Writes pretty JSON, with a final newline.
pub fn write_json(path: &Path, value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        // 1..=20 ms, shuffled.
        let mut v: Vec<u64> = (1..=20).collect();
        v.reverse();
        v.swap(3, 11);
        let s = Summary::of(&ms(&v)).unwrap();
        assert_eq!((s.min, s.p50, s.p95, s.max), (1.0, 10.0, 19.0, 20.0));
        assert_eq!(s.p99, 20.0);
        assert_eq!(s.mean, 10.5);
        let one = Summary::of(&ms(&[7])).unwrap();
        assert_eq!((one.min, one.p50, one.p95, one.max), (7.0, 7.0, 7.0, 7.0));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["what", "ms"],
            &[
                vec!["a".into(), "1.5".into()],
                vec!["longer".into(), "100.25".into()],
            ],
        );
        assert_eq!(
            t,
            "what        ms\n------  ------\na          1.5\nlonger  100.25\n"
        );
    }
}
