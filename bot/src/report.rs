//! Evaluation reports: the JSON document CI keeps as a baseline, the table
//! and Markdown views for people, JUnit XML for CI dashboards, a confusion
//! matrix picture (SVG) and the list of misclassified utterances. Gates turn
//! a report into pass/fail with a one-line reason.

use std::fmt::Write as _;
use std::path::Path;

use bankbot_models::entities::eval::{EntityReport, EntityScore};
use bankbot_models::metrics::Metrics;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelRef {
    pub path: String,
    pub trainer: String,
    pub base_model: String,
    pub base_model_id: String,
    pub training_data_hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataRef {
    pub path: String,
    pub rows: usize,
    pub hash: String,
}

/// One misclassified row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Miss {
    pub text: String,
    pub expected: String,
    pub predicted: String,
    pub confidence: f32,
    pub location: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    #[serde(flatten)]
    pub metrics: Metrics,
    pub model: ModelRef,
    pub data: DataRef,
    /// Intents in the data that the model does not know (their rows count as errors).
    pub unknown_intents: Vec<String>,
    /// Rows whose text is also a training example of the model.
    pub rows_seen_in_training: Option<usize>,
    /// Entity precision/recall/F1, when the data has annotations.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub entities: Option<EntityReport>,
    #[serde(skip)]
    pub misses: Vec<Miss>,
}

/// Pass/fail thresholds for CI.
#[derive(Debug, Clone, Default)]
pub struct Gates {
    pub min_accuracy: Option<f64>,
    pub min_macro_f1: Option<f64>,
    pub min_oos_recall: Option<f64>,
    /// Every entity type with at least [`ENTITY_GATE_SUPPORT`] annotations
    /// must reach this F1.
    pub min_entity_f1: Option<f64>,
    pub baseline: Option<Baseline>,
    pub max_drop: f64,
}

/// The figures of an earlier report that a run may not fall below.
#[derive(Debug, Clone, Deserialize)]
pub struct Baseline {
    pub accuracy: f64,
    pub macro_f1: f64,
    #[serde(default)]
    pub oos: Option<BaselineOos>,
    /// The data the baseline was measured on (absent in hand-written baselines).
    #[serde(default)]
    pub data: Option<BaselineData>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BaselineData {
    pub hash: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BaselineOos {
    pub recall: f64,
}

impl Gates {
    /// The first violated gate as a one-line reason.
    pub fn check(&self, r: &EvalReport) -> Result<(), String> {
        let m = &r.metrics;
        let pct = |x: f64| format!("{:.2}%", x * 100.0);
        if let Some(min) = self.min_accuracy
            && m.accuracy < min
        {
            return Err(format!(
                "accuracy {} is below --min-accuracy {}",
                pct(m.accuracy),
                pct(min)
            ));
        }
        if let Some(min) = self.min_macro_f1
            && m.macro_f1 < min
        {
            return Err(format!(
                "macro-F1 {} is below --min-macro-f1 {}",
                pct(m.macro_f1),
                pct(min)
            ));
        }
        if let Some(min) = self.min_oos_recall {
            match &m.oos {
                None => {
                    return Err(
                        "--min-oos-recall is set but the data has no out-of-scope rows".into(),
                    );
                }
                Some(o) if o.recall < min => {
                    return Err(format!(
                        "out-of-scope recall {} is below --min-oos-recall {}",
                        pct(o.recall),
                        pct(min)
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(min) = self.min_entity_f1 {
            let Some(e) = &r.entities else {
                return Err("--min-entity-f1 is set but the data has no entity annotations".into());
            };
            for (kind, score) in &e.per_entity {
                if score.support >= ENTITY_GATE_SUPPORT && score.f1 < min {
                    return Err(format!(
                        "{kind} entity F1 {} is below --min-entity-f1 {}",
                        pct(score.f1),
                        pct(min)
                    ));
                }
            }
        }
        if let Some(b) = &self.baseline {
            if b.oos.is_some() && m.oos.is_none() {
                return Err(
                    "the baseline has out-of-scope figures but the data has no out-of-scope rows"
                        .into(),
                );
            }
            let checks = [
                ("accuracy", m.accuracy, Some(b.accuracy)),
                ("macro-F1", m.macro_f1, Some(b.macro_f1)),
                (
                    "out-of-scope recall",
                    m.oos.as_ref().map_or(0.0, |o| o.recall),
                    b.oos.as_ref().map(|o| o.recall),
                ),
            ];
            for (name, now, before) in checks {
                if let Some(before) = before
                    && now < before - self.max_drop
                {
                    return Err(format!(
                        "{name} fell from {} to {} (more than --max-drop {})",
                        pct(before),
                        pct(now),
                        pct(self.max_drop)
                    ));
                }
            }
        }
        Ok(())
    }
}

fn pct(x: f64) -> String {
    format!("{:.2}", x * 100.0)
}

/// Entity types with fewer annotations than this are reported but not gated.
pub const ENTITY_GATE_SUPPORT: usize = 10;

fn entity_table(s: &mut String, e: &EntityReport) {
    let _ = writeln!(
        s,
        "\n{:<28} {:>9} {:>9} {:>9} {:>8} {:>11}",
        "entity", "precision", "recall", "f1", "support", "wrong value"
    );
    let mut row = |name: &str, c: &EntityScore| {
        let _ = writeln!(
            s,
            "{name:<28} {:>9} {:>9} {:>9} {:>8} {:>11}",
            pct(c.precision),
            pct(c.recall),
            pct(c.f1),
            c.support,
            c.wrong_value
        );
    };
    for (kind, c) in &e.per_entity {
        row(kind.name(), c);
    }
    row("(all, micro)", &e.overall);
    for (name, n) in &e.unscored {
        let _ = writeln!(
            s,
            "note: {n} `{name}` annotation(s) are not scored (no extractor)"
        );
    }
    let shown = e.misses.iter().take(15);
    if !e.misses.is_empty() {
        let _ = writeln!(s, "\nentity errors ({} in all, first 15):", e.misses.len());
    }
    for m in shown {
        let _ = writeln!(
            s,
            "  {:<11} {:<12} {:?} expected {} got {}   in {:?}",
            m.kind,
            m.entity.name(),
            m.span,
            m.expected.as_deref().unwrap_or("-"),
            m.predicted.as_deref().unwrap_or("-"),
            m.text
        );
    }
}

/// A terminal-friendly summary.
pub fn table(r: &EvalReport) -> String {
    let m = &r.metrics;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model   {} ({}, base {})",
        r.model.path, r.model.trainer, r.model.base_model
    );
    let _ = writeln!(s, "data    {} ({} rows)", r.data.path, r.data.rows);
    let _ = writeln!(s, "\naccuracy        {:>7}%", pct(m.accuracy));
    let _ = writeln!(s, "macro-F1        {:>7}%", pct(m.macro_f1));
    if let Some(o) = &m.oos {
        let _ = writeln!(s, "in-scope acc.   {:>7}%", pct(o.in_scope_accuracy));
        let _ = writeln!(
            s,
            "OOS recall      {:>7}%   ({} out-of-scope rows)",
            pct(o.recall),
            o.support
        );
        let _ = writeln!(s, "OOS precision   {:>7}%", pct(o.precision));
    }
    let _ = writeln!(s, "ECE             {:>7.4}", m.ece);
    if let Some(n) = r.rows_seen_in_training.filter(|&n| n > 0) {
        let _ = writeln!(
            s,
            "warning: {n} row(s) are also training examples; these figures overstate generalisation"
        );
    }
    if !r.unknown_intents.is_empty() {
        let _ = writeln!(
            s,
            "warning: intents unknown to the model: {}",
            r.unknown_intents.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "\n{:<28} {:>9} {:>9} {:>9} {:>8}",
        "intent", "precision", "recall", "f1", "support"
    );
    for (name, c) in &m.per_intent {
        let _ = writeln!(
            s,
            "{name:<28} {:>9} {:>9} {:>9} {:>8}",
            pct(c.precision),
            pct(c.recall),
            pct(c.f1),
            c.support
        );
    }
    if let Some(e) = &r.entities {
        entity_table(&mut s, e);
    }
    if !m.confusions.is_empty() {
        let _ = writeln!(s, "\nmost confused (expected -> predicted):");
        for c in &m.confusions {
            let _ = writeln!(
                s,
                "  {:>3}  {} -> {}   e.g. {:?}",
                c.count,
                c.expected,
                c.predicted,
                c.examples.first().map_or("", String::as_str)
            );
        }
    }
    s
}

/// Markdown for pull-request comments and BENCHMARKS.md.
pub fn markdown(r: &EvalReport) -> String {
    let m = &r.metrics;
    let mut s = String::new();
    let _ = writeln!(s, "| metric | value |\n|---|---|");
    let _ = writeln!(s, "| rows | {} |", m.rows);
    let _ = writeln!(s, "| accuracy | {}% |", pct(m.accuracy));
    let _ = writeln!(s, "| macro-F1 | {}% |", pct(m.macro_f1));
    if let Some(o) = &m.oos {
        let _ = writeln!(s, "| in-scope accuracy | {}% |", pct(o.in_scope_accuracy));
        let _ = writeln!(s, "| out-of-scope recall | {}% |", pct(o.recall));
        let _ = writeln!(s, "| out-of-scope precision | {}% |", pct(o.precision));
    }
    let _ = writeln!(s, "| ECE | {:.4} |", m.ece);
    let _ = writeln!(
        s,
        "\n| intent | precision | recall | F1 | support |\n|---|---:|---:|---:|---:|"
    );
    for (name, c) in &m.per_intent {
        let _ = writeln!(
            s,
            "| `{name}` | {} | {} | {} | {} |",
            pct(c.precision),
            pct(c.recall),
            pct(c.f1),
            c.support
        );
    }
    if let Some(e) = &r.entities {
        let _ = writeln!(
            s,
            "\n| entity | precision | recall | F1 | support | wrong value |\n|---|---:|---:|---:|---:|---:|"
        );
        for (kind, c) in &e.per_entity {
            let _ = writeln!(
                s,
                "| `{kind}` | {} | {} | {} | {} | {} |",
                pct(c.precision),
                pct(c.recall),
                pct(c.f1),
                c.support,
                c.wrong_value
            );
        }
    }
    if !m.confusions.is_empty() {
        let _ = writeln!(
            s,
            "\n| expected | predicted | count | example |\n|---|---|---:|---|"
        );
        for c in &m.confusions {
            let ex = c
                .examples
                .first()
                .map_or(String::new(), |e| e.replace('|', "\\|"));
            let _ = writeln!(
                s,
                "| `{}` | `{}` | {} | {ex} |",
                c.expected, c.predicted, c.count
            );
        }
    }
    s
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one test case per gate (failing when violated) and one per
/// intent, failing when any of its rows was misclassified, with the misses listed.
pub fn junit(r: &EvalReport, gates: &Gates) -> String {
    let m = &r.metrics;
    let mut cases = Vec::new();
    let gate = gates.check(r);
    cases.push((
        "gates".to_owned(),
        gate.err(),
        format!("accuracy={:.4} macro_f1={:.4}", m.accuracy, m.macro_f1),
    ));
    for (name, c) in &m.per_intent {
        let misses: Vec<&Miss> = r.misses.iter().filter(|x| &x.expected == name).collect();
        let failure = (!misses.is_empty()).then(|| {
            misses
                .iter()
                .map(|x| {
                    format!(
                        "{:?} -> {} ({:.2}) at {}",
                        x.text, x.predicted, x.confidence, x.location
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        cases.push((
            format!("intent.{name}"),
            failure,
            format!(
                "precision={:.4} recall={:.4} f1={:.4} support={}",
                c.precision, c.recall, c.f1, c.support
            ),
        ));
    }
    let failures = cases.iter().filter(|c| c.1.is_some()).count();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"bankbot-eval\" tests=\"{}\" failures=\"{failures}\">\n  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\">",
        cases.len(),
        xml_escape(&r.data.path),
        cases.len()
    );
    for (name, failure, out) in cases {
        let _ = write!(
            s,
            "    <testcase classname=\"bankbot.eval\" name=\"{}\">",
            xml_escape(&name)
        );
        if let Some(f) = failure {
            let first = f.lines().next().unwrap_or_default();
            let _ = write!(
                s,
                "<failure message=\"{}\">{}</failure>",
                xml_escape(first),
                xml_escape(&f)
            );
        }
        let _ = writeln!(
            s,
            "<system-out>{}</system-out></testcase>",
            xml_escape(&out)
        );
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

/// The confusion matrix as an SVG heat map (row = expected, column = predicted,
/// shade = share of the row).
pub fn confusion_svg(m: &Metrics) -> String {
    let n = m.labels.len();
    let cell = 14usize;
    let margin = 10 + m.labels.iter().map(|l| l.len()).max().unwrap_or(0) * 7;
    let size = margin + n * cell + 10;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{size}\" height=\"{size}\" font-family=\"monospace\" font-size=\"10\">"
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    for (i, label) in m.labels.iter().enumerate() {
        let y = margin + i * cell + cell - 3;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{y}\" text-anchor=\"end\">{}</text>",
            margin - 4,
            xml_escape(label)
        );
        let x = margin + i * cell + cell - 3;
        let _ = writeln!(
            s,
            "<text x=\"{x}\" y=\"{}\" text-anchor=\"start\" transform=\"rotate(-90 {x} {})\">{}</text>",
            margin - 4,
            margin - 4,
            xml_escape(label)
        );
    }
    for (i, row) in m.matrix.iter().enumerate() {
        let total: usize = row.iter().sum();
        for (j, &count) in row.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let share = count as f64 / total.max(1) as f64;
            let (r, g, b) = if i == j { (0, 110, 60) } else { (200, 30, 30) };
            let _ = writeln!(
                s,
                "<rect x=\"{}\" y=\"{}\" width=\"{cell}\" height=\"{cell}\" fill=\"rgb({r},{g},{b})\" fill-opacity=\"{:.3}\"><title>{} -> {}: {count}</title></rect>",
                margin + j * cell,
                margin + i * cell,
                0.15 + 0.85 * share,
                xml_escape(&m.labels[i]),
                xml_escape(&m.labels[j])
            );
        }
    }
    let _ = writeln!(
        s,
        "<rect x=\"{margin}\" y=\"{margin}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>",
        n * cell,
        n * cell
    );
    s.push_str("</svg>\n");
    s
}

/// Writes `report.json`, `confusion-matrix.svg` and `misclassified.csv`.
pub fn write_dir(dir: &Path, r: &EvalReport) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    crate::atomic::write(
        &dir.join("report.json"),
        (serde_json::to_string_pretty(r)? + "\n").as_bytes(),
    )?;
    crate::atomic::write(
        &dir.join("confusion-matrix.svg"),
        confusion_svg(&r.metrics).as_bytes(),
    )?;
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["text", "expected", "predicted", "confidence", "location"])?;
    for x in &r.misses {
        w.write_record([
            &x.text,
            &x.expected,
            &x.predicted,
            &format!("{:.4}", x.confidence),
            &x.location,
        ])?;
    }
    let csv = w.into_inner().map_err(|e| e.into_error())?;
    crate::atomic::write(&dir.join("misclassified.csv"), &csv)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use bankbot_models::metrics::{Outcome, compute};

    use super::*;

    fn report() -> EvalReport {
        let rows = [
            Outcome {
                text: "a1",
                expected: "a",
                predicted: "a",
                confidence: 0.9,
            },
            Outcome {
                text: "b1",
                expected: "b",
                predicted: "a",
                confidence: 0.6,
            },
            Outcome {
                text: "o1",
                expected: "out_of_scope",
                predicted: "out_of_scope",
                confidence: 0.8,
            },
        ];
        EvalReport {
            metrics: compute(&rows, 5, 2),
            model: ModelRef {
                path: "m".into(),
                trainer: "t".into(),
                base_model: "b".into(),
                base_model_id: "id".into(),
                training_data_hash: "h".into(),
            },
            data: DataRef {
                path: "d<&>.yaml".into(),
                rows: 3,
                hash: "x".into(),
            },
            unknown_intents: vec![],
            rows_seen_in_training: Some(0),
            entities: None,
            misses: vec![Miss {
                text: "b1".into(),
                expected: "b".into(),
                predicted: "a".into(),
                confidence: 0.6,
                location: "d:2:3".into(),
            }],
        }
    }

    #[test]
    fn gates_report_the_first_violation() {
        let r = report();
        assert!(Gates::default().check(&r).is_ok());
        let g = Gates {
            min_accuracy: Some(0.9),
            ..Default::default()
        };
        assert_eq!(
            g.check(&r).unwrap_err(),
            "accuracy 66.67% is below --min-accuracy 90.00%"
        );
        let g = Gates {
            min_oos_recall: Some(0.5),
            ..Default::default()
        };
        assert!(g.check(&r).is_ok());
        let g = Gates {
            baseline: Some(Baseline {
                accuracy: 0.70,
                macro_f1: 0.0,
                oos: None,
                data: None,
            }),
            max_drop: 0.01,
            ..Default::default()
        };
        assert_eq!(
            g.check(&r).unwrap_err(),
            "accuracy fell from 70.00% to 66.67% (more than --max-drop 1.00%)"
        );
        let g = Gates {
            baseline: Some(Baseline {
                accuracy: 0.67,
                macro_f1: 0.0,
                oos: None,
                data: None,
            }),
            max_drop: 0.01,
            ..Default::default()
        };
        assert!(g.check(&r).is_ok());
    }

    #[test]
    fn json_round_trips_into_a_baseline() {
        let json = serde_json::to_string(&report()).unwrap();
        let b: Baseline = serde_json::from_str(&json).unwrap();
        assert!((b.accuracy - 2.0 / 3.0).abs() < 1e-9);
        assert!((b.oos.unwrap().recall - 1.0).abs() < 1e-9);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        for key in [
            "accuracy",
            "macro_f1",
            "per_intent",
            "confusions",
            "oos",
            "ece",
            "model",
            "data",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
    }

    #[test]
    fn junit_is_escaped_and_marks_failures() {
        let x = junit(
            &report(),
            &Gates {
                min_accuracy: Some(0.9),
                ..Default::default()
            },
        );
        assert!(x.contains("name=\"d&lt;&amp;&gt;.yaml\""));
        assert!(x.contains("failures=\"2\""), "{x}");
        assert!(x.contains("<testcase classname=\"bankbot.eval\" name=\"intent.b\"><failure"));
        assert!(x.contains("accuracy 66.67% is below"));
    }

    #[test]
    fn svg_has_a_cell_per_nonzero_count() {
        let svg = confusion_svg(&report().metrics);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<title>").count(), 3);
    }
}
