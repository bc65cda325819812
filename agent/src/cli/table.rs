//! Column-aligned output, byte for byte as Consul's CLI lays it out with its two libraries:
//! `columnize` (tables: each column but the last padded to its widest cell, two spaces
//! between columns, cells trimmed) and `text/tabwriter` as Consul configures it (a padding of
//! six after the widest cell of the first column).

/// The lines `columnize` makes of `rows` (the header is the first row).
pub(crate) fn columnize(rows: &[Vec<String>]) -> Vec<String> {
    let rows: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.iter().map(|c| c.trim()).collect())
        .collect();
    let mut widths: Vec<usize> = Vec::new();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(c.len()),
                None => widths.push(c.len()),
            }
        }
    }
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                line.push_str(c);
                if i + 1 < r.len() {
                    line.push_str(&" ".repeat(widths[i] - c.len() + 2));
                }
            }
            line
        })
        .collect()
}

/// Prints `rows` through [`columnize`] to stdout.
pub(crate) fn print_table(rows: &[Vec<String>]) {
    for line in columnize(rows) {
        println!("{line}");
    }
}

/// The lines a `tabwriter` with a padding of 6 makes of two-cell rows: the first cell padded
/// to the widest first cell plus six.
pub(crate) fn tab_pairs(rows: &[(String, String)]) -> Vec<String> {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 6;
    rows.iter()
        .map(|(k, v)| format!("{k}{}{v}", " ".repeat(width - k.len())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn columnize_pads_all_but_the_last_column() {
        let lines = columnize(&[
            row(&["Node", "Address", "Meta"]),
            row(&["a", "10.0.0.1:8301", ""]),
        ]);
        assert_eq!(lines[0], "Node  Address        Meta");
        assert_eq!(lines[1], "a     10.0.0.1:8301  ");
    }

    #[test]
    fn tab_pairs_pad_six_past_the_widest_key() {
        let lines = tab_pairs(&[("consul".into(), "".into()), ("web".into(), "a,b".into())]);
        assert_eq!(lines, ["consul      ", "web         a,b"]);
    }
}
