//! The tokens paths are made of: Rust source with comments, string and
//! char literals and whitespace taken out.

/// A lexical token; comments, string and char literals and whitespace are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Star,
    Other,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub tok: Tok,
    pub line: usize,
}

impl Token {
    pub fn is_ident(&self, word: &str) -> bool {
        matches!(&self.tok, Tok::Ident(w) if w == word)
    }
}

/// Splits Rust source into the tokens paths are made of. Comments and
/// literals go first, so a doc link or a string naming `crate::x` is no use.
pub fn tokenize(source: &str) -> Vec<Token> {
    let s: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < s.len() {
        let (tok, end) = next_token(&s, i);
        let end = end.min(s.len());
        if let Some(tok) = tok {
            tokens.push(Token { tok, line });
        }
        line += s[i..end].iter().filter(|c| **c == '\n').count();
        i = end;
    }
    tokens
}

/// What starts at `i` and where it ends: a token, or `None` for whitespace,
/// a comment, a number or a literal.
fn next_token(s: &[char], i: usize) -> (Option<Tok>, usize) {
    let at = |k: usize| s.get(k).copied().unwrap_or('\0');
    let word_end = |k: usize| k + s[k.min(s.len())..].iter().take_while(|c| **c == '_' || c.is_alphanumeric()).count();
    match s[i] {
        '/' if at(i + 1) == '/' => (None, i + s[i..].iter().take_while(|c| **c != '\n').count()),
        '/' if at(i + 1) == '*' => (None, block_comment_end(s, i)),
        '"' => (None, string_end(s, i + 1)),
        '\'' => (None, char_or_lifetime_end(s, i)),
        ':' if at(i + 1) == ':' => (Some(Tok::PathSep), i + 2),
        c if c.is_ascii_digit() => (None, word_end(i)),
        c if c == '_' || c.is_alphabetic() => {
            let end = word_end(i);
            let hashes = s[end..].iter().take_while(|c| **c == '#').count();
            let word: String = s[i..end].iter().collect();
            match word.as_str() {
                "r" | "br" | "cr" if at(end + hashes) == '"' => (None, raw_string_end(s, end + hashes + 1, hashes)),
                "b" | "c" if at(end) == '"' => (None, string_end(s, end + 1)),
                "b" if at(end) == '\'' => (None, char_or_lifetime_end(s, end)),
                // A raw identifier, `r#type`: the word after the `#`.
                "r" if hashes == 1 => {
                    (Some(Tok::Ident(s[end + 1..word_end(end + 1)].iter().collect())), word_end(end + 1))
                }
                _ => (Some(Tok::Ident(word)), end),
            }
        }
        '{' => (Some(Tok::Open), i + 1),
        '}' => (Some(Tok::Close), i + 1),
        ',' => (Some(Tok::Comma), i + 1),
        '*' => (Some(Tok::Star), i + 1),
        c if c.is_whitespace() => (None, i + 1),
        _ => (Some(Tok::Other), i + 1),
    }
}

/// The end of a `/* */` comment starting at `i`; they nest in Rust.
fn block_comment_end(s: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < s.len() {
        match (s[i], s.get(i + 1)) {
            ('/', Some('*')) => depth += 1,
            ('*', Some('/')) if depth == 1 => return i + 2,
            ('*', Some('/')) => depth -= 1,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    i
}

/// The end of a string literal whose opening quote is before `i`.
fn string_end(s: &[char], mut i: usize) -> usize {
    while i < s.len() && s[i] != '"' {
        // An escape covers the next character, which may be a quote.
        i += if s[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The end of a raw string opened by `hashes` hashes and a quote before `i`.
fn raw_string_end(s: &[char], mut i: usize, hashes: usize) -> usize {
    while i < s.len() {
        if s[i] == '"' && s[i + 1..].iter().take(hashes).filter(|c| **c == '#').count() == hashes {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

/// At a `'`: the end of a char literal (`'x'`, `'\n'`, `'"'`), or of only
/// the quote of a lifetime or label (`'a`), whose name then reads as a word.
fn char_or_lifetime_end(s: &[char], i: usize) -> usize {
    match (s.get(i + 1), s.get(i + 2)) {
        (Some('\\'), _) => i + 3 + s[(i + 3).min(s.len())..].iter().take_while(|c| **c != '\'').count() + 1,
        (Some(_), Some('\'')) => i + 3,
        _ => i + 1,
    }
}
