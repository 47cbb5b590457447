//! ARCHITECTURE.md's "path of one message" names files and functions; this
//! checks that each file exists and defines the function, so the map a
//! newcomer follows never points at code that moved.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

/// (file, function) from every row of the table under the "Start here"
/// heading: rows look like `| what | `path` | `function` |`.
fn message_path(architecture: &str) -> Vec<(String, String)> {
    let section = architecture
        .split("## Start here")
        .nth(1)
        .expect("ARCHITECTURE.md has a \"Start here\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter(|line| line.starts_with('|') && line.contains("`crates/"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let unquote = |cell: &str| cell.trim_matches('`').to_owned();
            (unquote(cells[2]), unquote(cells[3]))
        })
        .collect()
}

#[test]
fn the_message_path_names_files_and_functions_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let steps = message_path(&architecture);
    assert!(steps.len() >= 10, "the table lost its rows: {steps:?}");
    let mut missing = Vec::new();
    for (file, function) in &steps {
        let Ok(source) = std::fs::read_to_string(root.join(file)) else {
            missing.push(format!("{file} does not exist"));
            continue;
        };
        let defines = [format!("fn {function}("), format!("fn {function}<")]
            .iter()
            .any(|needle| source.contains(needle.as_str()));
        if !defines {
            missing.push(format!("{file} defines no fn {function}"));
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md is out of date: {missing:#?}"
    );
}
