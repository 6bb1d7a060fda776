//! The one table `scripts/bench` prints, and small formatting helpers.

use serde_json::{json, Value};

/// One line of the table. `verdict` is `Some(pass)` where the row carries a target.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub id: String,
    pub what: String,
    pub result: String,
    pub p50: String,
    pub p99: String,
    pub vs: String,
    pub target: String,
    pub verdict: Option<bool>,
}

impl Row {
    pub fn new(id: &str, what: impl Into<String>) -> Row {
        Row {
            id: id.to_owned(),
            what: what.into(),
            ..Row::default()
        }
    }
    pub fn result(mut self, s: impl Into<String>) -> Row {
        self.result = s.into();
        self
    }
    pub fn latency(mut self, p50_us: f64, p99_us: f64) -> Row {
        self.p50 = ms(p50_us);
        self.p99 = ms(p99_us);
        self
    }
    pub fn vs(mut self, s: impl Into<String>) -> Row {
        self.vs = s.into();
        self
    }
    pub fn target(mut self, limit: impl Into<String>, pass: bool) -> Row {
        self.target = limit.into();
        self.verdict = Some(pass);
        self
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id, "what": self.what, "result": self.result, "p50": self.p50,
            "p99": self.p99, "vs": self.vs, "target": self.target,
            "verdict": self.verdict.map(|p| if p { "PASS" } else { "MISS" }),
        })
    }
}

/// Renders rows as an aligned text table (display width counted in chars).
pub fn table(rows: &[Row]) -> String {
    let header = Row {
        id: "#".into(),
        what: "measurement".into(),
        result: "result".into(),
        p50: "p50".into(),
        p99: "p99".into(),
        vs: "relative".into(),
        target: "target".into(),
        verdict: None,
    };
    let cells = |r: &Row| -> Vec<String> {
        vec![
            r.id.clone(),
            r.what.clone(),
            r.result.clone(),
            r.p50.clone(),
            r.p99.clone(),
            r.vs.clone(),
            r.target.clone(),
            match r.verdict {
                Some(true) => "PASS".into(),
                Some(false) => "MISS".into(),
                None if r.id == "#" => "verdict".into(),
                None => String::new(),
            },
        ]
    };
    let all: Vec<Vec<String>> = std::iter::once(&header).chain(rows).map(cells).collect();
    let widths: Vec<usize> = (0..8)
        .map(|i| all.iter().map(|c| c[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, row) in all.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                let pad = w - c.chars().count();
                // Numbers right-aligned, text left-aligned.
                if matches!(i, 2..=4) {
                    format!("{}{c}", " ".repeat(pad))
                } else {
                    format!("{c}{}", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if n == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

pub fn ms(us: f64) -> String {
    if us >= 100_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

pub fn us(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1000.0)
    }
}

/// 12345.6 → "12,346".
pub fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn ratio(x: f64) -> String {
    format!("{x:.2}×")
}

/// `a / b`, or 0 when `b` is not positive (a run that measured nothing).
pub fn quotient(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Nearest-rank percentile of a sorted slice.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// UTC `YYYYMMDDTHHMMSSZ` for file names, from the system clock (no date crate needed).
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(ms(820.0), "0.82 ms");
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 99.0), 4.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(quotient(3.0, 2.0), 1.5);
        assert_eq!(quotient(3.0, 0.0), 0.0);
        let ts = timestamp();
        assert_eq!(ts.len(), 16);
        assert!(ts.starts_with("20"));
    }

    #[test]
    fn table_aligns_and_marks_targets() {
        let rows = vec![
            Row::new("1", "floor").result("10 req/s"),
            Row::new("2", "validate")
                .result("9 req/s")
                .target("≥ 0.9×", true),
        ];
        let t = table(&rows);
        assert!(t.contains("PASS"));
        assert_eq!(t.lines().count(), 4);
    }
}
