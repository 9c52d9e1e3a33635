//! What a scenario run found: readable lines for people, named figures for
//! the plan (which takes medians over rounds).

use crate::stats::{CpuUsed, ThreadsUsed};
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

    /// The CPU line and figures: broker and tool CPU-seconds, and `count`
    /// per broker CPU-second as figure `per_cpu` (e.g. "deliveries per broker CPU-s").
    pub fn cpu(&mut self, used: CpuUsed, count: f64, per_cpu: &'static str) {
        let tool = used.tool;
        self.line(format!(
            "{}tool CPU {tool:.2} s",
            used.broker
                .map(|c| format!("broker CPU {c:.2} s: {:.0} {per_cpu} | ", count / c))
                .unwrap_or_default()
        ));
        if let Some(broker) = used.broker {
            self.figure("broker CPU s", broker);
            self.figure(per_cpu, count / broker);
        }
        // Too short a run reads 0 s (the clock ticks in 10 ms): no figure.
        if let Some(engine) = used
            .engine
            .filter(|e| *e + used.broker.unwrap_or(0.0) > 0.0)
        {
            let both = used.broker.unwrap_or(0.0) + engine;
            self.line(format!(
                "engine CPU {engine:.2} s: {:.0} per broker+engine CPU-s",
                count / both
            ));
            self.figure("engine CPU s", engine);
            self.figure("per broker+engine CPU-s", count / both);
        }
        self.figure("tool CPU s", tool);
    }

    /// The broker-threads line and figures: the busiest thread's share of
    /// the broker's CPU, and how many threads did work.
    pub fn threads(&mut self, threads: &ThreadsUsed) {
        self.line(format!(
            "broker threads: {} did work; busiest {} with {:.0} % of the broker's CPU",
            threads.working,
            threads.busiest,
            threads.busiest_share * 100.0
        ));
        self.figure("busiest broker thread CPU share", threads.busiest_share);
        self.figure("broker threads working", threads.working as f64);
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
