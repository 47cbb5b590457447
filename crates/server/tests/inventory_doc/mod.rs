//! Reads the data inventory, docs/SERVER_DATA.md: its rows
//! `| `table` | `column` | holds | why | kept | legal export |`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

/// One stored column, as the inventory lists it.
#[derive(Debug)]
pub struct Row {
    pub table: String,
    pub column: String,
    /// The `account.…` export paths named in the "legal export" cell.
    pub export_paths: Vec<String>,
}

pub fn path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/SERVER_DATA.md")
}

fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Every inventory row: lines of a markdown table whose first two cells are
/// a backticked table and column name, with six cells.
pub fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(path()).expect("docs/SERVER_DATA.md is missing");
    let mut rows = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        let (Some(table), Some(column)) = (cells.first(), cells.get(1)) else {
            continue;
        };
        let (table, column) = (backticked(table), backticked(column));
        if table.len() != 1 || column.len() != 1 {
            continue;
        }
        assert_eq!(
            cells.len(),
            6,
            "inventory row has {} cells, not 6: {line}",
            cells.len()
        );
        let export_paths = backticked(cells[5])
            .into_iter()
            .filter(|p| p.starts_with("account."))
            .collect();
        rows.push(Row {
            table: table[0].clone(),
            column: column[0].clone(),
            export_paths,
        });
    }
    rows
}

/// The export fields the inventory promises, as `account.…` paths.
pub fn export_paths() -> BTreeSet<String> {
    rows().into_iter().flat_map(|r| r.export_paths).collect()
}
