//! What the reports of the multi-run commands (`compare`, `btx`, `paths`) share: Markdown
//! tables with one column per built-in task, and the report's Markdown and JSON files.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Result, TrainError};

/// A Markdown table, built row by row.
pub struct Table {
    text: String,
}

impl Table {
    /// The header: the `first` columns (the first `left` of them left-aligned, the rest
    /// right-aligned: numbers), one right-aligned column per task, then the `last` columns.
    pub fn new(first: &[&str], left: usize, tasks: &[&str], last: &[&str]) -> Self {
        let names: Vec<&str> = first.iter().chain(tasks).chain(last).copied().collect();
        let rules: Vec<&str> = (0..names.len()).map(|i| if i < left { "---" } else { "---:" }).collect();
        Self { text: format!("| {} |\n|{}|\n", names.join(" | "), rules.join("|")) }
    }

    /// Adds one row of cells, in the header's order.
    pub fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        let cells: Vec<String> = cells.into_iter().collect();
        self.text.push_str(&format!("| {} |\n", cells.join(" | ")));
    }

    /// The table's Markdown.
    pub fn into_string(self) -> String {
        self.text
    }
}

/// The task names of the first non-empty list: the order of the per-task columns.
pub fn task_names<'a>(lists: impl IntoIterator<Item = &'a [(String, f64)]>) -> Vec<&'a str> {
    lists.into_iter().find(|l| !l.is_empty()).map(|l| l.iter().map(|(t, _)| t.as_str()).collect()).unwrap_or_default()
}

/// The value `list` gives `task`.
pub fn task_value(list: &[(String, f64)], task: &str) -> Option<f64> {
    list.iter().find(|(t, _)| t == task).map(|&(_, v)| v)
}

/// A share as a whole percentage: `0.25` is `25%`.
pub fn percent(share: f64) -> String {
    format!("{:.0}%", 100.0 * share)
}

/// Writes `NAME.md` (the table) and `NAME.json` (the rows) into `dir`; returns both files.
pub fn write_md_json(dir: &Path, name: &str, markdown: &str, rows: &impl Serialize) -> Result<[PathBuf; 2]> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let md = dir.join(format!("{name}.md"));
    std::fs::write(&md, markdown).map_err(|e| TrainError::io(&md, e))?;
    let json = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(rows).expect("report rows serialise");
    std::fs::write(&json, text).map_err(|e| TrainError::io(&json, e))?;
    Ok([md, json])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_names_left_and_numbers_right() {
        let mut table = Table::new(&["name", "loss"], 1, &["sort", "copy"], &["NMI"]);
        table.row(["a".into(), "0.5".into(), "10%".into(), "-".into(), "0.1".into()]);
        let expected = "| name | loss | sort | copy | NMI |\n|---|---:|---:|---:|---:|\n| a | 0.5 | 10% | - | 0.1 |\n";
        assert_eq!(table.into_string(), expected);
        let lists: [&[(String, f64)]; 2] = [&[], &[("sort".into(), 0.25)]];
        assert_eq!(task_names(lists), ["sort"]);
        assert_eq!((task_value(lists[1], "sort"), task_value(lists[1], "copy")), (Some(0.25), None));
    }
}
