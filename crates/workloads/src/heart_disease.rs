//! `heart-disease-eval`: a risk score from 14 clinical values, and a running summary kept per
//! worker instance (wire spec §6).
//!
//! Every input item is evaluated in order; the single output (index 0) is the last item's result.
//! An item `"<label>:<14 space-separated integers>"` gives `You have a <risk>% risk of heart
//! disease` and is added to the summary; an item with no values gives the summary.

use std::sync::Mutex;

use crate::stoi::{StoiError, stoi};
use crate::{Context, Input, Output, Workload, WorkloadError};

/// Avalon's heart-disease evaluation. The summary (total risk and count) lives as long as the
/// worker instance, and across restarts through [`Workload::snapshot`].
#[derive(Debug, Default)]
pub struct HeartDiseaseEval {
    summary: Mutex<Summary>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Summary {
    total_risk: i64,
    count: i64,
}

impl HeartDiseaseEval {
    fn evaluate(&self, input: &str) -> String {
        let pieces: Vec<&str> = input.split(':').filter(|p| !p.is_empty()).collect();
        let values: Vec<&str> = match pieces.get(1) {
            Some(data) if pieces.len() > 1 => data.split(' ').filter(|v| !v.is_empty()).collect(),
            _ => Vec::new(),
        };
        let mut summary = self.summary.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match values.len() {
            0 if summary.count == 0 => "No accumulated heart disease history".to_owned(),
            0 => format!(
                "Heart disease risk is {}% for {} people",
                summary.total_risk / summary.count,
                summary.count
            ),
            14 => match risk(&values) {
                Ok(risk) => {
                    summary.total_risk += i64::from(risk);
                    summary.count += 1;
                    format!("You have a {risk}% risk of heart disease")
                }
                Err(StoiError::Invalid) => "Invalid data found in input data".to_owned(),
                Err(StoiError::OutOfRange) => {
                    "Caught exception while processing workload data".to_owned()
                }
            },
            _ => "Error with missing or incorrect input format".to_owned(),
        }
    }
}

impl Workload for HeartDiseaseEval {
    fn name(&self) -> &'static str {
        "heart-disease-eval"
    }

    fn process(&self, _: &Context<'_>, inputs: &[Input]) -> Result<Vec<Output>, WorkloadError> {
        let mut result = String::new();
        for input in inputs {
            result = self.evaluate(&crate::text(&input.data));
        }
        Ok(vec![Output::new(0, result)])
    }

    fn stateful(&self) -> bool {
        true
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        let summary = *self.summary.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(format!("{} {}", summary.total_risk, summary.count).into_bytes())
    }

    fn restore(&self, snapshot: &[u8]) -> Result<(), WorkloadError> {
        let invalid = || WorkloadError::InvalidState("heart-disease summary".into());
        let text = std::str::from_utf8(snapshot).map_err(|_| invalid())?;
        let (total, count) = text.split_once(' ').ok_or_else(invalid)?;
        let restored = Summary {
            total_risk: total.parse().map_err(|_| invalid())?,
            count: count.parse().map_err(|_| invalid())?,
        };
        if restored.count < 0 {
            return Err(invalid());
        }
        *self.summary.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = restored;
        Ok(())
    }
}

/// `100 - (int)(weighted sum of the scores)`, in double arithmetic, left to right.
fn risk(values: &[&str]) -> Result<i32, StoiError> {
    let mut v = [0f64; 14];
    for (slot, text) in v.iter_mut().zip(values) {
        *slot = f64::from(stoi(text)?);
    }
    let sum = model_a(100.0, 18.0, v[0]) * 0.03
        + if v[1] == 0.0 { 100.0 } else { 0.0 } * 0.01
        + table(v[2], &[(1.0, 0.0), (2.0, 12.0), (3.0, 35.0), (4.0, 100.0)], 100.0) * 0.21
        + model_a(218.0, 108.0, v[3]) * 0.05
        + model_a(309.0, 126.0, v[4]) * 0.05
        + model_a(248.0, 98.0, v[5]) * 0.04
        + table(v[6], &[(0.0, 100.0), (1.0, 9.0), (2.0, 7.0)], 100.0) * 0.19
        + model_b(198.0, 61.0, v[7]) * 0.06
        + table(v[8], &[(0.0, 100.0), (1.0, 0.0)], 100.0) * 0.18
        + model_a(100.0, 0.0, v[9]) * 0.05
        + table(v[10], &[(0.0, 49.0), (1.0, 100.0)], 63.0) * 0.03
        + table(v[11], &[(0.0, 0.0), (1.0, 35.0), (2.0, 70.0)], 100.0) * 0.04
        + thal(v[12]) * 0.02
        + if v[13] == 0.0 { 100.0 } else { 0.0 } * 0.04;
    // The sum of the weights is 1, so the sum lies in [0, 100] and the cast is exact truncation.
    Ok(100 - sum as i32)
}

fn model_a(max: f64, opt: f64, d: f64) -> f64 {
    if d < opt {
        100.0
    } else if d < max {
        100.0 * (max - d) / (max - opt)
    } else {
        0.0
    }
}

fn model_b(max: f64, opt: f64, d: f64) -> f64 {
    let delta = (d - opt).abs();
    if delta < max - opt { 100.0 - 100.0 * delta / (max - opt) } else { 0.0 }
}

fn table(value: f64, entries: &[(f64, f64)], otherwise: f64) -> f64 {
    entries.iter().find(|(key, _)| *key == value).map_or(otherwise, |(_, score)| *score)
}

fn thal(d: f64) -> f64 {
    if (3.0..6.0).contains(&d) {
        45.0
    } else if (6.0..8.0).contains(&d) {
        79.0
    } else if d >= 8.0 {
        100.0
    } else {
        0.0
    }
}
