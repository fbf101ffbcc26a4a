//! A small EDN reader: the subset of Clojure's data notation that Jepsen
//! histories use, with positions for error messages.
//!
//! It reads `nil`, `true`/`false`, integers (with an optional `N`), floats
//! (with an optional `M`), strings with escapes, characters, keywords,
//! symbols, lists, vectors, maps, sets, tagged literals (`#inst "..."`,
//! record literals such as `#jepsen.history.Op{...}`), `#_` discards, `;`
//! comments, and commas as whitespace. Every value carries the line and
//! column where it starts, so the importer can name them in errors.
//!
//! Why not a crate: `edn-rs` is deprecated, and `edn-format` brings big-number
//! and date crates a history never needs and reports no positions. The
//! grammar is small; this reader never panics (a property test feeds it
//! arbitrary bytes) and nests at most [`MAX_DEPTH`] deep.

use std::fmt;

/// How deep collections may nest before the reader gives up (a guard
/// against stack exhaustion on hostile input).
pub(crate) const MAX_DEPTH: usize = 256;

/// A 1-based line and column (columns count characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// An EDN value and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub(crate) pos: Pos,
    pub(crate) value: Edn,
}

/// An EDN value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Edn {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Char(char),
    /// Without the leading colon.
    Keyword(String),
    Symbol(String),
    List(Vec<Node>),
    Vector(Vec<Node>),
    /// In the order written (duplicate keys are kept; lookups take the first).
    Map(Vec<(Node, Node)>),
    Set(Vec<Node>),
    /// The tag without `#`, and the tagged value.
    Tagged(String, Box<Node>),
}

impl Edn {
    /// A short name of the kind of value, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Edn::Nil => "nil",
            Edn::Bool(_) => "a boolean",
            Edn::Int(_) => "an integer",
            Edn::Float(_) => "a float",
            Edn::Str(_) => "a string",
            Edn::Char(_) => "a character",
            Edn::Keyword(_) => "a keyword",
            Edn::Symbol(_) => "a symbol",
            Edn::List(_) => "a list",
            Edn::Vector(_) => "a vector",
            Edn::Map(_) => "a map",
            Edn::Set(_) => "a set",
            Edn::Tagged(..) => "a tagged value",
        }
    }

    /// The value of keyword `key` in a map (`None` if this is no map or the
    /// key is missing).
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Edn::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Edn::Keyword(name) if name == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Why EDN text could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EdnError {
    pub(crate) pos: Pos,
    pub(crate) message: String,
}

impl fmt::Display for EdnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.message)
    }
}

/// Reads every top-level value of `text`.
pub(crate) fn parse_all(text: &str) -> Result<Vec<Node>, EdnError> {
    let mut reader = Reader::new(text);
    let mut out = Vec::new();
    while let Some(node) = reader.next_form(0)? {
        out.push(node);
    }
    Ok(out)
}

/// Reads exactly one value from `text` (surrounding whitespace allowed).
pub(crate) fn parse_one(text: &str) -> Result<Node, EdnError> {
    let mut reader = Reader::new(text);
    let Some(node) = reader.next_form(0)? else {
        return Err(reader.error("expected a value, found the end of the input"));
    };
    reader.skip_blank();
    if reader.peek().is_some() {
        return Err(reader.error("unexpected text after the value"));
    }
    Ok(node)
}

/// Reads the first value of `text` and returns it with the text after it
/// (from just past the value, whitespace included).
pub(crate) fn parse_prefix(text: &str) -> Result<(Node, &str), EdnError> {
    let mut reader = Reader::new(text);
    let Some(node) = reader.next_form(0)? else {
        return Err(reader.error("expected a value, found the end of the input"));
    };
    Ok((node, &text[reader.offset..]))
}

struct Reader<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    column: usize,
    /// Bytes consumed so far.
    offset: usize,
}

fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | '(' | ')' | '[' | ']' | '{' | '}' | '"' | ';')
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        Reader {
            chars: text.chars().peekable(),
            line: 1,
            column: 1,
            offset: 0,
        }
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    fn error(&self, message: impl Into<String>) -> EdnError {
        EdnError {
            pos: self.pos(),
            message: message.into(),
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        self.offset += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    /// Skips whitespace, commas and `;` comments.
    fn skip_blank(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() || c == ',' {
                self.bump();
            } else if c == ';' {
                while let Some(c) = self.bump() {
                    if c == '\n' {
                        break;
                    }
                }
            } else {
                break;
            }
        }
    }

    /// The next value, `None` at the end of the input. A closing delimiter
    /// here is an error (collections consume their own).
    fn next_form(&mut self, depth: usize) -> Result<Option<Node>, EdnError> {
        loop {
            self.skip_blank();
            let pos = self.pos();
            let Some(c) = self.peek() else {
                return Ok(None);
            };
            if depth > MAX_DEPTH {
                return Err(self.error(format!("values nest more than {MAX_DEPTH} deep")));
            }
            let value = match c {
                '(' => {
                    self.bump();
                    Edn::List(self.seq(')', depth)?)
                }
                '[' => {
                    self.bump();
                    Edn::Vector(self.seq(']', depth)?)
                }
                '{' => {
                    self.bump();
                    self.map(pos, depth)?
                }
                ')' | ']' | '}' => return Err(self.error(format!("unmatched `{c}`"))),
                '"' => {
                    self.bump();
                    Edn::Str(self.string(pos)?)
                }
                '\\' => {
                    self.bump();
                    Edn::Char(self.character(pos)?)
                }
                '#' => {
                    self.bump();
                    match self.peek() {
                        Some('{') => {
                            self.bump();
                            Edn::Set(self.seq('}', depth)?)
                        }
                        Some('_') => {
                            self.bump();
                            if self.next_form(depth + 1)?.is_none() {
                                return Err(self.error("`#_` discards nothing: the input ended"));
                            }
                            continue;
                        }
                        Some(c) if c.is_alphabetic() => {
                            let tag = self.token();
                            let Some(inner) = self.next_form(depth + 1)? else {
                                return Err(EdnError {
                                    pos,
                                    message: format!("tag `#{tag}` has no value"),
                                });
                            };
                            Edn::Tagged(tag, Box::new(inner))
                        }
                        _ => {
                            return Err(EdnError {
                                pos,
                                message: "`#` must start a set `#{`, a discard `#_` or a tag"
                                    .into(),
                            })
                        }
                    }
                }
                _ => {
                    let token = self.token();
                    atom(&token).map_err(|message| EdnError { pos, message })?
                }
            };
            return Ok(Some(Node { pos, value }));
        }
    }

    /// Values up to `close`, which it consumes.
    fn seq(&mut self, close: char, depth: usize) -> Result<Vec<Node>, EdnError> {
        let mut items = Vec::new();
        loop {
            self.skip_blank();
            match self.peek() {
                None => {
                    return Err(
                        self.error(format!("expected `{close}`, found the end of the input"))
                    )
                }
                Some(c) if c == close => {
                    self.bump();
                    return Ok(items);
                }
                Some(c @ (')' | ']' | '}')) => {
                    return Err(self.error(format!("expected `{close}`, found `{c}`")))
                }
                Some(_) => {
                    if let Some(node) = self.next_form(depth + 1)? {
                        items.push(node);
                    }
                }
            }
        }
    }

    fn map(&mut self, pos: Pos, depth: usize) -> Result<Edn, EdnError> {
        let items = self.seq('}', depth)?;
        if items.len() % 2 != 0 {
            return Err(EdnError {
                pos,
                message: format!(
                    "a map needs an even number of forms, this one has {}",
                    items.len()
                ),
            });
        }
        let mut entries = Vec::with_capacity(items.len() / 2);
        let mut items = items.into_iter();
        while let (Some(k), Some(v)) = (items.next(), items.next()) {
            entries.push((k, v));
        }
        Ok(Edn::Map(entries))
    }

    /// A string body after the opening quote.
    fn string(&mut self, start: Pos) -> Result<String, EdnError> {
        let mut out = String::new();
        loop {
            let Some(c) = self.bump() else {
                return Err(EdnError {
                    pos: start,
                    message: "string not terminated".into(),
                });
            };
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let at = self.pos();
                    let escaped = match self.bump() {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('u') => self.unicode_escape(at)?,
                        Some(other) => {
                            return Err(EdnError {
                                pos: at,
                                message: format!("unknown escape `\\{other}` in a string"),
                            })
                        }
                        None => {
                            return Err(EdnError {
                                pos: start,
                                message: "string not terminated".into(),
                            })
                        }
                    };
                    out.push(escaped);
                }
                c => out.push(c),
            }
        }
    }

    /// Four hex digits after `\u`.
    fn unicode_escape(&mut self, at: Pos) -> Result<char, EdnError> {
        let mut code = 0u32;
        for _ in 0..4 {
            let digit = self
                .bump()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| EdnError {
                    pos: at,
                    message: "`\\u` needs four hex digits".into(),
                })?;
            code = code * 16 + digit;
        }
        char::from_u32(code).ok_or_else(|| EdnError {
            pos: at,
            message: format!("`\\u{code:04x}` is not a character (a lone surrogate)"),
        })
    }

    /// A character literal after the backslash.
    fn character(&mut self, start: Pos) -> Result<char, EdnError> {
        let Some(first) = self.bump() else {
            return Err(EdnError {
                pos: start,
                message: "a character literal needs a character".into(),
            });
        };
        let mut name = String::from(first);
        while let Some(c) = self.peek() {
            if is_delimiter(c) {
                break;
            }
            name.push(c);
            self.bump();
        }
        if name.chars().count() == 1 {
            return Ok(first);
        }
        match name.as_str() {
            "newline" => Ok('\n'),
            "space" => Ok(' '),
            "tab" => Ok('\t'),
            "return" => Ok('\r'),
            "backspace" => Ok('\u{8}'),
            "formfeed" => Ok('\u{c}'),
            _ => {
                let code = name
                    .strip_prefix('u')
                    .filter(|hex| hex.len() == 4)
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .and_then(char::from_u32);
                code.ok_or_else(|| EdnError {
                    pos: start,
                    message: format!("unknown character literal `\\{name}`"),
                })
            }
        }
    }

    /// Characters up to the next delimiter.
    fn token(&mut self) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if is_delimiter(c) {
                break;
            }
            out.push(c);
            self.bump();
        }
        out
    }
}

/// A token that is not a collection, string or character.
fn atom(token: &str) -> Result<Edn, String> {
    match token {
        "nil" => return Ok(Edn::Nil),
        "true" => return Ok(Edn::Bool(true)),
        "false" => return Ok(Edn::Bool(false)),
        "" => return Err("expected a value".into()),
        _ => {}
    }
    let first = token.chars().next().unwrap_or(' ');
    let second = token.chars().nth(1);
    let numeric = first.is_ascii_digit()
        || (matches!(first, '+' | '-') && second.is_some_and(|c| c.is_ascii_digit()));
    if numeric {
        return number(token);
    }
    if let Some(name) = token.strip_prefix(':') {
        if name.is_empty() || !name.chars().all(symbol_char) {
            return Err(format!("`{token}` is not a valid keyword"));
        }
        return Ok(Edn::Keyword(name.to_owned()));
    }
    if token.chars().all(symbol_char) && !first.is_ascii_digit() {
        return Ok(Edn::Symbol(token.to_owned()));
    }
    Err(format!("`{token}` is not a valid EDN value"))
}

fn symbol_char(c: char) -> bool {
    c.is_alphanumeric() || ".*+!-_?$%&=<>/:#'".contains(c)
}

fn number(token: &str) -> Result<Edn, String> {
    if let Some(int) = token.strip_suffix('N') {
        return int
            .parse::<i64>()
            .map(Edn::Int)
            .map_err(|_| format!("`{token}` is not an integer that fits in 64 bits"));
    }
    let is_float = token.contains(['.', 'e', 'E']) || token.ends_with('M');
    if is_float {
        let text = token.strip_suffix('M').unwrap_or(token);
        let valid = text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
        return match text.parse::<f64>() {
            Ok(f) if valid && f.is_finite() => Ok(Edn::Float(f)),
            _ => Err(format!("`{token}` is not a valid number")),
        };
    }
    token.parse::<i64>().map(Edn::Int).map_err(|_| {
        if token.chars().skip(1).all(|c| c.is_ascii_digit()) {
            format!("`{token}` is an integer too large for 64 bits")
        } else {
            format!("`{token}` is not a valid number (ratios and radix forms are not supported)")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(text: &str) -> Edn {
        parse_one(text).unwrap().value
    }

    fn err(text: &str) -> String {
        match parse_all(text) {
            Ok(v) => panic!("{text:?} parsed as {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn reads_scalars() {
        assert_eq!(one("nil"), Edn::Nil);
        assert_eq!(one("true"), Edn::Bool(true));
        assert_eq!(one("false"), Edn::Bool(false));
        assert_eq!(one("-42"), Edn::Int(-42));
        assert_eq!(one("+7"), Edn::Int(7));
        assert_eq!(one("12N"), Edn::Int(12));
        assert_eq!(one("1.5"), Edn::Float(1.5));
        assert_eq!(one("-2e3"), Edn::Float(-2000.0));
        assert_eq!(one("3.25M"), Edn::Float(3.25));
        assert_eq!(one(":cas"), Edn::Keyword("cas".into()));
        assert_eq!(
            one(":jepsen.independent/tuple"),
            Edn::Keyword("jepsen.independent/tuple".into())
        );
        assert_eq!(one("foo/bar"), Edn::Symbol("foo/bar".into()));
        assert_eq!(one("-"), Edn::Symbol("-".into()));
        assert_eq!(
            one(r#""a\"b\\c\n\t\u00e9""#),
            Edn::Str("a\"b\\c\n\té".into())
        );
        assert_eq!(one(r"\a"), Edn::Char('a'));
        assert_eq!(one(r"\newline"), Edn::Char('\n'));
        assert_eq!(one(r"\u0041"), Edn::Char('A'));
    }

    #[test]
    fn reads_collections_comments_commas_and_tags() {
        let text = "; a history\n[{:a 1, :b [2 3]} (x) #{4} #_ :ignored #inst \"2020-01-01\" #my.Rec{:k 1}]";
        let Edn::Vector(items) = one(text) else {
            panic!("not a vector")
        };
        assert_eq!(items.len(), 5);
        assert_eq!(items[0].pos, Pos { line: 2, column: 2 });
        assert_eq!(items[0].value.get("a").unwrap().value, Edn::Int(1));
        assert!(matches!(items[1].value, Edn::List(_)));
        assert!(matches!(items[2].value, Edn::Set(_)));
        assert!(
            matches!(&items[3].value, Edn::Tagged(t, inner) if t == "inst" && inner.value == Edn::Str("2020-01-01".into()))
        );
        assert!(
            matches!(&items[4].value, Edn::Tagged(t, inner) if t == "my.Rec" && inner.value.get("k").is_some())
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        assert_eq!(
            err("[1 2\n 3"),
            "2:3: expected `]`, found the end of the input"
        );
        assert_eq!(
            err("{:a 1\n :b}"),
            "1:1: a map needs an even number of forms, this one has 3"
        );
        assert_eq!(err("[1 2)"), "1:5: expected `]`, found `)`");
        assert_eq!(err("\n  \"abc"), "2:3: string not terminated");
        assert_eq!(
            err("[:ok 99999999999999999999]"),
            "1:6: `99999999999999999999` is an integer too large for 64 bits"
        );
        assert_eq!(
            err("#?"),
            "1:1: `#` must start a set `#{`, a discard `#_` or a tag"
        );
        assert_eq!(err(")"), "1:1: unmatched `)`");
        assert_eq!(err(r#""\q""#), "1:3: unknown escape `\\q` in a string");
        assert!(err(&"[".repeat(MAX_DEPTH + 10)).contains("nest more than"));
        assert!(parse_one("1 2").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_all(&text);
        }

        #[test]
        fn arbitrary_edn_like_text_never_panics(text in "[\\[\\](){}#_:;\"\\\\ ,a-z0-9.+\\-NMe\n]{0,200}") {
            let _ = parse_all(&text);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_all(&String::from_utf8_lossy(&bytes));
        }
    }
}
