//! Column-aligned tables for command output, laid out as Consul's CLI lays them out: columns
//! two spaces apart, each as wide as its widest cell, no trailing blanks.

use std::io::Write;

/// Prints `header` and `rows` to stdout.
pub(crate) fn print_table(header: &[String], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |r: &[String]| {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        cells.join("  ").trim_end().to_string()
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line(header));
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
}
