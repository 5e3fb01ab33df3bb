//! The data store's predicate language: comparisons of a record's fields, joined with
//! `and`, `or`, `not` and parentheses, evaluated on the server. Small and safe: a bounded
//! text, a bounded number of nodes and depth, regexes compiled with size limits by the
//! `regex` crate (linear time), and each evaluation counted against a budget.
//!
//! ```text
//! age >= 18 and (city == "Oslo" or city prefix "Ber") and not name matches "^tmp"
//! exists email and tags.0 == $first and _id > 1000
//! ```
//!
//! Fields are dotted paths into a JSON document (`a.b`, `list.0`); a DataFrame record is the
//! array of its items, `@0`, `@1`... (`@0.name` inside a document item). `_id` and `_version` are the record's id and version.
//! Values: strings in double quotes (JSON escapes), numbers, `true`, `false`, `null`, and
//! `$name` for a parameter the query passes. Comparing values of different kinds is false
//! (and `!=` true); a missing field is `null`.

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// Longest predicate text, in bytes.
pub const MAX_TEXT: usize = 4096;
/// Most nodes (comparisons and operators) in one predicate.
pub const MAX_NODES: usize = 256;
/// Deepest nesting of parentheses and `not`.
pub const MAX_DEPTH: usize = 32;
/// Largest compiled regex, in bytes (the `regex` crate's size limit).
pub const MAX_REGEX: usize = 1 << 20;

/// A predicate that does not parse, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {at}: {message}")]
pub struct ParseError {
    /// Byte offset in the text.
    pub at: usize,
    /// What is wrong there.
    pub message: String,
}

/// A parsed predicate, ready to test records.
#[derive(Debug, Clone)]
pub struct Predicate {
    root: Node,
    nodes: usize,
}

#[derive(Debug, Clone)]
enum Node {
    Const(bool),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Exists(Path),
    Compare(Operand, Op, Operand),
    Prefix(Operand, String),
    Matches(Operand, Box<regex::Regex>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
enum Operand {
    Field(Path),
    Value(Value),
}

/// A field path: `_id`, `_version`, or steps into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// The record's id.
    Id,
    /// The record's version.
    Version,
    /// Keys (or array positions) into the document, outermost first.
    Doc(Vec<String>),
}

/// What a predicate sees of a record.
pub struct Subject<'a> {
    /// The record's id.
    pub id: u64,
    /// The record's version.
    pub version: u64,
    /// The record's fields (a JSON document, a DataFrame's items as an array, or `null`).
    pub doc: &'a Value,
}

impl Predicate {
    /// Parses `text`; `$name` takes its value from `params`.
    pub fn parse(text: &str, params: &Map<String, Value>) -> Result<Predicate, ParseError> {
        if text.len() > MAX_TEXT {
            return Err(ParseError {
                at: MAX_TEXT,
                message: format!("a predicate is at most {MAX_TEXT} bytes"),
            });
        }
        let mut p = Parser { text, at: 0, params, nodes: 0, depth: 0 };
        p.skip_space();
        if p.at == text.len() {
            return Ok(Predicate { root: Node::Const(true), nodes: 0 });
        }
        let root = p.or()?;
        p.skip_space();
        if p.at != text.len() {
            return Err(p.error("expected `and`, `or` or the end"));
        }
        Ok(Predicate { root, nodes: p.nodes })
    }

    /// A predicate every record passes.
    pub fn all() -> Predicate {
        Predicate { root: Node::Const(true), nodes: 0 }
    }

    /// Whether every record passes (an empty predicate).
    pub fn is_all(&self) -> bool {
        matches!(self.root, Node::Const(true))
    }

    /// Nodes evaluated at most per record (the cost the budget counts).
    pub fn cost(&self) -> usize {
        self.nodes.max(1)
    }

    /// Whether `s` passes.
    pub fn test(&self, s: &Subject<'_>) -> bool {
        eval(&self.root, s)
    }

    /// The field and value of a top-level `field == value` (alone, or in a chain of `and`),
    /// for a lookup through an index on that field.
    pub fn equality(&self) -> Vec<(&Path, &Value)> {
        let mut out = Vec::new();
        conjuncts(&self.root, &mut out);
        out
    }
}

fn conjuncts<'a>(n: &'a Node, out: &mut Vec<(&'a Path, &'a Value)>) {
    match n {
        Node::And(a, b) => {
            conjuncts(a, out);
            conjuncts(b, out);
        }
        Node::Compare(Operand::Field(p), Op::Eq, Operand::Value(v))
        | Node::Compare(Operand::Value(v), Op::Eq, Operand::Field(p)) => out.push((p, v)),
        _ => {}
    }
}

fn eval(n: &Node, s: &Subject<'_>) -> bool {
    match n {
        Node::Const(b) => *b,
        Node::And(a, b) => eval(a, s) && eval(b, s),
        Node::Or(a, b) => eval(a, s) || eval(b, s),
        Node::Not(a) => !eval(a, s),
        Node::Exists(p) => !resolve(p, s).is_null(),
        Node::Compare(a, op, b) => {
            let (a, b) = (operand(a, s), operand(b, s));
            match op {
                Op::Eq => equal(&a, &b),
                Op::Ne => !equal(&a, &b),
                Op::Lt => order(&a, &b) == Some(Ordering::Less),
                Op::Le => matches!(order(&a, &b), Some(Ordering::Less | Ordering::Equal)),
                Op::Gt => order(&a, &b) == Some(Ordering::Greater),
                Op::Ge => matches!(order(&a, &b), Some(Ordering::Greater | Ordering::Equal)),
            }
        }
        Node::Prefix(a, prefix) => {
            matches!(operand(a, s).as_ref(), Value::String(v) if v.starts_with(prefix.as_str()))
        }
        Node::Matches(a, re) => matches!(operand(a, s).as_ref(), Value::String(v) if re.is_match(v)),
    }
}

/// A value or a borrowed field.
enum Seen<'a> {
    Borrowed(&'a Value),
    Owned(Value),
}

impl Seen<'_> {
    fn as_ref(&self) -> &Value {
        match self {
            Seen::Borrowed(v) => v,
            Seen::Owned(v) => v,
        }
    }
}

const NULL: Value = Value::Null;

fn operand<'a>(o: &'a Operand, s: &Subject<'a>) -> Seen<'a> {
    match o {
        Operand::Value(v) => Seen::Borrowed(v),
        Operand::Field(Path::Id) => Seen::Owned(Value::from(s.id)),
        Operand::Field(Path::Version) => Seen::Owned(Value::from(s.version)),
        Operand::Field(p) => Seen::Borrowed(resolve(p, s)),
    }
}

fn resolve<'a>(p: &Path, s: &Subject<'a>) -> &'a Value {
    match p {
        Path::Id | Path::Version => &NULL,
        Path::Doc(steps) => field(s.doc, steps),
    }
}

/// The value at `steps` in `doc` (`null` where there is none).
pub fn field<'a>(doc: &'a Value, steps: &[String]) -> &'a Value {
    let mut v = doc;
    for step in steps {
        v = match v {
            Value::Object(m) => m.get(step.as_str()).unwrap_or(&NULL),
            Value::Array(a) => step.parse::<usize>().ok().and_then(|i| a.get(i)).unwrap_or(&NULL),
            _ => &NULL,
        };
    }
    v
}

fn equal(a: &Seen<'_>, b: &Seen<'_>) -> bool {
    match (a.as_ref(), b.as_ref()) {
        (Value::Number(x), Value::Number(y)) => number_order(x, y) == Some(Ordering::Equal),
        (x, y) => x == y,
    }
}

fn order(a: &Seen<'_>, b: &Seen<'_>) -> Option<Ordering> {
    match (a.as_ref(), b.as_ref()) {
        (Value::Number(x), Value::Number(y)) => number_order(x, y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn number_order(x: &serde_json::Number, y: &serde_json::Number) -> Option<Ordering> {
    match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
        (Some(a), Some(b), _, _) => Some(a.cmp(&b)),
        (_, _, Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
    }
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
    params: &'a Map<String, Value>,
    nodes: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError { at: self.at, message: message.into() }
    }

    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    fn node(&mut self, n: Node) -> Result<Node, ParseError> {
        self.nodes += 1;
        match self.nodes > MAX_NODES {
            true => Err(self.error(format!("a predicate has at most {MAX_NODES} parts"))),
            false => Ok(n),
        }
    }

    /// Takes keyword `word` if it comes next as a whole word.
    fn keyword(&mut self, word: &str) -> bool {
        self.skip_space();
        let rest = self.rest();
        let bytes = rest.as_bytes();
        let whole = bytes.get(..word.len()).is_some_and(|b| b.eq_ignore_ascii_case(word.as_bytes()))
            && !bytes.get(word.len()).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        if whole {
            self.at += word.len();
        }
        whole
    }

    fn or(&mut self) -> Result<Node, ParseError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            let right = self.and()?;
            left = self.node(Node::Or(Box::new(left), Box::new(right)))?;
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Node, ParseError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            let right = self.unary()?;
            left = self.node(Node::And(Box::new(left), Box::new(right)))?;
        }
        Ok(left)
    }

    fn deeper(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        match self.depth > MAX_DEPTH {
            true => Err(self.error(format!("a predicate nests at most {MAX_DEPTH} deep"))),
            false => Ok(()),
        }
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        self.skip_space();
        if self.keyword("not") {
            self.deeper()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return self.node(Node::Not(Box::new(inner)));
        }
        if self.rest().starts_with('(') {
            self.at += 1;
            self.deeper()?;
            let inner = self.or()?;
            self.skip_space();
            if !self.rest().starts_with(')') {
                return Err(self.error("expected `)`"));
            }
            self.at += 1;
            self.depth -= 1;
            return Ok(inner);
        }
        if self.keyword("exists") {
            self.skip_space();
            let Operand::Field(path) = self.operand()? else {
                return Err(self.error("`exists` takes a field"));
            };
            return self.node(Node::Exists(path));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Node, ParseError> {
        self.skip_space();
        let left = self.operand()?;
        self.skip_space();
        let op_at = self.at;
        if self.keyword("prefix") {
            self.skip_space();
            let Operand::Value(Value::String(p)) = self.operand()? else {
                return Err(ParseError { at: op_at, message: "`prefix` takes a string".into() });
            };
            return self.node(Node::Prefix(left, p));
        }
        if self.keyword("matches") {
            self.skip_space();
            let pattern_at = self.at;
            let Operand::Value(Value::String(p)) = self.operand()? else {
                return Err(ParseError { at: op_at, message: "`matches` takes a string".into() });
            };
            let re = regex::RegexBuilder::new(&p)
                .size_limit(MAX_REGEX)
                .dfa_size_limit(MAX_REGEX)
                .nest_limit(MAX_DEPTH as u32)
                .build()
                .map_err(|e| ParseError { at: pattern_at, message: format!("bad regex: {e}") })?;
            return self.node(Node::Matches(left, Box::new(re)));
        }
        let op = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
            ("=", Op::Eq),
        ]
        .into_iter()
        .find(|(s, _)| self.rest().starts_with(s));
        let Some((s, op)) = op else {
            return Err(self.error("expected a comparison: == != < <= > >= prefix matches"));
        };
        self.at += s.len();
        self.skip_space();
        let right = self.operand()?;
        self.node(Node::Compare(left, op, right))
    }

    fn operand(&mut self) -> Result<Operand, ParseError> {
        let rest = self.rest();
        let start = self.at;
        let Some(c) = rest.chars().next() else {
            return Err(self.error("expected a field or a value, found the end"));
        };
        if c == '"' {
            // A JSON string: find its closing quote, then let serde_json read the escapes.
            let bytes = rest.as_bytes();
            let mut i = 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            if i >= bytes.len() {
                return Err(self.error("a string has no closing quote"));
            }
            let s: String =
                serde_json::from_str(&rest[..=i]).map_err(|e| self.error(format!("bad string: {e}")))?;
            self.at += i + 1;
            return Ok(Operand::Value(Value::String(s)));
        }
        if c == '$' {
            let name_len = word_len(&rest[1..]);
            if name_len == 0 {
                return Err(self.error("expected a parameter name after `$`"));
            }
            let name = &rest[1..=name_len];
            let Some(v) = self.params.get(name) else {
                return Err(self.error(format!("no parameter `{name}` was given")));
            };
            self.at += 1 + name_len;
            return Ok(Operand::Value(v.clone()));
        }
        if c == '-' || c.is_ascii_digit() {
            let len = rest.find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c))).unwrap_or(rest.len());
            let n: serde_json::Number =
                rest[..len].parse().map_err(|_| self.error(format!("bad number `{}`", &rest[..len])))?;
            self.at += len;
            return Ok(Operand::Value(Value::Number(n)));
        }
        // `@N` starts a path at position N of a record that is an array (a DataFrame).
        let positional = c == '@';
        if positional {
            self.at += 1;
            if !self.rest().starts_with(|c: char| c.is_ascii_digit()) {
                return Err(self.error("expected an item's position after `@`"));
            }
        } else if !(c.is_ascii_alphabetic() || c == '_') {
            return Err(self.error(format!("unexpected `{c}`")));
        }
        // A path: words joined by dots (a step may be a number: an array position).
        let mut steps = Vec::new();
        loop {
            let len = word_len(self.rest());
            if len == 0 {
                return Err(self.error("expected a field name after `.`"));
            }
            steps.push(self.rest()[..len].to_owned());
            self.at += len;
            if !self.rest().starts_with('.') {
                break;
            }
            self.at += 1;
        }
        if positional {
            return Ok(Operand::Field(Path::Doc(steps)));
        }
        Ok(match (steps.len(), steps[0].as_str()) {
            (1, "true") => Operand::Value(Value::Bool(true)),
            (1, "false") => Operand::Value(Value::Bool(false)),
            (1, "null") => Operand::Value(Value::Null),
            (1, "_id") => Operand::Field(Path::Id),
            (1, "_version") => Operand::Field(Path::Version),
            (1, w) if ["and", "or", "not", "prefix", "matches", "exists"].contains(&w) => {
                return Err(ParseError { at: start, message: format!("`{w}` is a keyword, not a field") })
            }
            _ => Operand::Field(Path::Doc(steps)),
        })
    }
}

fn word_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn passes(text: &str, doc: Value) -> bool {
        let params = json!({"min": 18, "city": "Oslo"});
        let p = Predicate::parse(text, params.as_object().unwrap()).unwrap();
        p.test(&Subject { id: 7, version: 2, doc: &doc })
    }

    #[test]
    fn comparisons_logic_and_fields() {
        let doc = json!({"name": "Ada", "age": 36, "city": "Oslo", "tags": ["a", "b"], "m": {"x": 1.5}});
        assert!(passes("age >= 18 and city == \"Oslo\"", doc.clone()));
        assert!(passes("age >= $min and city = $city", doc.clone()));
        assert!(!passes("age < 18 or city != \"Oslo\"", doc.clone()));
        assert!(passes("not (age < 18) and tags.1 == \"b\" and m.x > 1", doc.clone()));
        assert!(passes("name prefix \"A\" and name matches \"^A.a$\"", doc.clone()));
        assert!(passes("exists m.x and not exists m.y and missing == null", doc.clone()));
        assert!(passes("_id == 7 and _version > 1 and _id != \"7\"", doc.clone()));
        assert!(!passes("age > \"3\"", doc.clone()), "different kinds never order");
        assert!(passes("age == 36.0 AND (name == \"x\" OR age <= 36)", doc.clone()));
        assert!(passes("", doc.clone()));
        assert!(passes("0 == 0", json!([1, "x"])), "a number is a value");
        assert!(passes("@1 == \"x\" and @0 == 1 and @2 == null", json!([1, "x"])));
        assert!(passes("@0.a == 2", json!([{"a": 2}])));
    }

    #[test]
    fn errors_say_where() {
        let none = Map::new();
        let at = |t: &str| Predicate::parse(t, &none).unwrap_err();
        assert_eq!(at("age >").at, 5);
        assert_eq!(at("age >= 18 and").at, 13);
        assert_eq!(at("(age > 1").at, 8);
        assert_eq!(at("age ~ 3").at, 4);
        assert!(at("x == $nope").message.contains("nope"));
        assert!(at("x matches \"(\"").message.contains("regex"));
        assert!(at("x == \"open").message.contains("quote"));
        assert!(at("and == 1").message.contains("keyword"));
        assert!(at("x prefix 3").message.contains("string"));
        assert_eq!(at("@x == 1").at, 1);
        assert_eq!(at("vä == 1").at, 1);
        assert_eq!(at("a == 1 ändern").at, 7, "keywords are compared as bytes, not sliced");
        assert!(at(&"(".repeat(40)).message.contains("nests"));
        assert!(at(&vec!["a == 1"; 300].join(" or ")).message.contains("parts"));
        assert!(at(&"x".repeat(5000)).message.contains("4096"));
    }
}
