//! Aligned text tables, coloured on a terminal and plain when piped.

use std::io::IsTerminal as _;

use crossterm::style::{Color, Stylize as _};

/// A cell's text and, on a terminal, its colour.
#[derive(Debug)]
pub struct Cell {
    text: String,
    color: Option<Color>,
    bold: bool,
}

impl Cell {
    pub fn plain(text: impl Into<String>) -> Cell {
        Cell { text: text.into(), color: None, bold: false }
    }

    pub fn colored(text: impl Into<String>, color: Color) -> Cell {
        Cell { text: text.into(), color: Some(color), bold: false }
    }

    pub fn bold(mut self) -> Cell {
        self.bold = true;
        self
    }
}

/// Whether stdout gets colours: a terminal, and `NO_COLOR` unset.
pub fn stdout_is_colored() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Renders `rows` under `header`, columns padded to their widest cell.
pub fn render(header: &[&str], rows: &[Vec<Cell>], color: bool) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.text.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header_cells: Vec<Cell> = header.iter().map(|h| Cell::plain(*h).bold()).collect();
    for row in std::iter::once(&header_cells).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let last = i + 1 == row.len();
            let padding = if last { 0 } else { widths.get(i).copied().unwrap_or(0) - cell.text.chars().count() + 2 };
            if color {
                let mut styled = cell.text.as_str().stylize();
                if let Some(c) = cell.color {
                    styled = styled.with(c);
                }
                if cell.bold {
                    styled = styled.bold();
                }
                line.push_str(&styled.to_string());
            } else {
                line.push_str(&cell.text);
            }
            line.push_str(&" ".repeat(padding));
        }
        // An empty last cell would leave padding at the end of the line.
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_plain_output_has_no_escapes() {
        let rows = vec![
            vec![Cell::plain("0"), Cell::colored("available", Color::Green), Cell::plain("")],
            vec![Cell::plain("10"), Cell::colored("mine", Color::Cyan), Cell::plain("ada@example.com")],
        ];
        let text = render(&["SLOT", "STATE", "HOLDER"], &rows, false);
        assert_eq!(text, "SLOT  STATE      HOLDER\n0     available\n10    mine       ada@example.com\n");
        assert!(render(&["A"], &[vec![Cell::colored("x", Color::Red)]], true).contains('\u{1b}'));
    }
}
