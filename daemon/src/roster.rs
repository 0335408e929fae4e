//! The class list `rerod user import` reads: CSV, one account a row, an
//! e-mail address and optionally a password.
//!
//! With a header row, the columns are found by name (`email`, `password`;
//! others, such as a student's name from a spreadsheet export, are ignored).
//! Without one, the first column is the address and the second, if any, the
//! password. Fields may be quoted as spreadsheets write them (`"a,b"`,
//! `""` for a quote). Blank lines and lines starting with `#` are skipped.

/// One account to create: its line in the file, its address as written, and
/// the password given for it, if any (one is generated otherwise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub line: usize,
    pub email: String,
    pub password: Option<String>,
}

/// The rows of a roster, or what is wrong with it (line and reason).
pub fn parse(text: &str) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let mut columns: Option<(usize, Option<usize>)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim_start_matches('\u{FEFF}');
        if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
            continue;
        }
        let fields = split(raw).map_err(|e| format!("line {line}: {e}"))?;
        let (email_col, password_col) = match columns {
            Some(columns) => columns,
            None => {
                let named = |name: &str| fields.iter().position(|f| f.trim().eq_ignore_ascii_case(name));
                if let Some(email) = named("email").or_else(|| named("e-mail")) {
                    columns = Some((email, named("password")));
                    continue;
                }
                *columns.insert((0, Some(1)))
            }
        };
        let email = fields.get(email_col).map(|f| f.trim()).unwrap_or_default();
        if email.is_empty() {
            return Err(format!("line {line}: no e-mail address"));
        }
        let password = password_col.and_then(|col| fields.get(col)).filter(|p| !p.is_empty()).cloned();
        rows.push(Row { line, email: email.to_owned(), password });
    }
    Ok(rows)
}

/// One CSV line's fields. A password is taken exactly as written between
/// the commas (or the quotes): spaces count.
fn split(line: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed");
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: usize, email: &str, password: Option<&str>) -> Row {
        Row { line, email: email.into(), password: password.map(str::to_owned) }
    }

    #[test]
    fn addresses_alone_or_with_passwords() {
        let text = "ada@uni.example\n\n# late joiners\nbob@uni.example,orchid lantern tuesday\ncarol@uni.example,\n";
        assert_eq!(
            parse(text).unwrap(),
            [
                row(1, "ada@uni.example", None),
                row(4, "bob@uni.example", Some("orchid lantern tuesday")),
                row(5, "carol@uni.example", None)
            ]
        );
    }

    #[test]
    fn a_header_names_the_columns_and_others_are_ignored() {
        let text = "\u{FEFF}Name,E-Mail,Password\r\n\"Lovelace, Ada\",ada@uni.example,\"a \"\"quoted\"\", comma\"\r\n\
                    Bob,bob@uni.example,\r\n";
        assert_eq!(
            parse(text).unwrap(),
            [row(2, "ada@uni.example", Some("a \"quoted\", comma")), row(3, "bob@uni.example", None)]
        );
        assert_eq!(parse("email\nada@uni.example,ignored\n").unwrap(), [row(2, "ada@uni.example", None)]);
    }

    #[test]
    fn broken_rows_are_named_by_line() {
        assert_eq!(parse("ada@uni.example\n,secret-words-here\n"), Err("line 2: no e-mail address".into()));
        assert_eq!(parse("\"ada@uni.example\n"), Err("line 1: a quoted field is not closed".into()));
    }
}
