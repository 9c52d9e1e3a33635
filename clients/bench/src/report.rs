//! What a scenario run found: readable lines for people, named figures for
//! the plan (which takes medians over rounds).

use std::fmt::Write;

/// One measured quantity.
#[derive(Clone, Debug)]
pub struct Figure {
    pub name: &'static str,
    pub value: f64,
}

/// The outcome of one scenario run.
#[derive(Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub figures: Vec<Figure>,
    /// Lost or duplicated messages, refused connections: a run with problems
    /// still reports its figures, and the plan marks it.
    pub problems: Vec<String>,
}

impl Report {
    pub fn line(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    pub fn figure(&mut self, name: &'static str, value: f64) {
        self.figures.push(Figure { name, value });
    }

    pub fn problem(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value)
    }

    /// The readable form.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            let _ = writeln!(text, "{line}");
        }
        for problem in &self.problems {
            let _ = writeln!(text, "PROBLEM: {problem}");
        }
        text
    }
}

/// Difference of two optional readings (CPU seconds before and after).
pub fn delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}
