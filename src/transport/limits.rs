//! The bounds a document must keep before anything walks it: the parser, async-graphql's
//! validation, and our own passes over the document and its result.
//!
//! Every check is a cheap, linear pass, and runs in [`super::pipeline::prepare`], the one
//! place every transport hands a document to:
//! - [`check_nesting`] reads the raw text before it is parsed: the parser recurses once per
//!   nested `{`, `[` or `(`, so a 3 KB document of nested list values would overflow the
//!   stack and abort the process.
//! - [`check_tokens`] counts the text's lexical tokens before it is parsed: the parser keeps
//!   every token (and a node for most), so the 1 MiB a body may hold would cost it hundreds
//!   of thousands of allocations before any other limit could look at the document.
//! - [`check_selections`] counts the fields (and fragments) a document selects once every
//!   fragment spread is expanded (memoized per fragment, so it costs the document's size, not the expansion's):
//!   a few hundred bytes that double a spread at each level would otherwise select millions
//!   of fields for validation and execution to walk.
//! - [`check_directives`] bounds the directives on any one field, fragment spread, inline
//!   fragment, operation, fragment or variable: 30,000 `@include(if: true)` on one field
//!   would otherwise be walked by every validation rule (and compared pairwise by the one
//!   that finds repeated directives).
//!
//! The introspection-only rule (`introspection_too_nested`) lives in [`super::document`].

use std::collections::HashMap;

use async_graphql::parser::Positioned;
use async_graphql::parser::types::{Directive, ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Name, Pos};

use super::error::TransportError;

/// Deepest nesting of `{`, `[` and `(` in a document's text. The deepest real documents
/// (the standard introspection query's nine `ofType`s) nest about 15; the data depth limit
/// is 12.
pub(crate) const MAX_NESTING: usize = 64;

/// Most fields a document may select once its fragments are expanded. The standard
/// introspection query selects about 250, the home screen about 60.
pub(crate) const MAX_SELECTIONS: usize = 2_000;

/// Deepest chain of fragments spread within fragments.
pub(crate) const MAX_SPREAD_DEPTH: usize = 32;

/// Most lexical tokens (names, numbers, strings, punctuators) a document may hold. The
/// standard introspection query holds about 160, the largest checked-in operation (the home
/// screen) about 100, so 15,000 leaves a client's biggest generated document room to grow
/// a hundredfold, while it keeps what the parser allocates small (the 1 MiB a body may hold
/// would be 500,000 tokens of `a `), and refuses floods of aliases or directives before
/// they are parsed at all.
pub(crate) const MAX_TOKENS: usize = 15_000;

/// Most directives on one field, fragment spread, inline fragment, operation, fragment or
/// variable definition. The schema's executable directives, `@include` and `@skip`, are not
/// repeatable, so a valid field carries at most two; 8 leaves room for directives the
/// schema may add (`@defer`, a client's own) and still refuses a flood before validation
/// walks it.
pub(crate) const MAX_DIRECTIVES: usize = 8;

/// The bounds of a document's text, checked before it is parsed: [`check_nesting`] and
/// [`check_tokens`].
/// Returns the number of tokens.
pub(crate) fn check_text(query: &str) -> Result<usize, TransportError> {
    check_nesting(query)?;
    check_tokens(query)
}

/// The bounds of a parsed document, checked before it is validated: [`check_selections`],
/// [`check_directives`] and [`check_introspection`].
pub(crate) fn check_parsed(doc: &ExecutableDocument) -> Result<(), TransportError> {
    check_selections(doc)?;
    check_directives(doc)?;
    check_introspection(doc)
}

/// Most `__schema` and `__type` fields in one document. Each answers with (a part of) the
/// whole schema, whatever the document's size: 180 aliases of a `__schema` walk are 16 KB of
/// text and 3.5 MB of answer. Tools ask once (GraphiQL's introspection query has one
/// `__schema`).
pub(crate) const MAX_INTROSPECTION_FIELDS: usize = 3;

/// Refuses a document with more than [`MAX_INTROSPECTION_FIELDS`] `__schema` / `__type`
/// fields (counted where they are written: a fragment spread twice under one key answers
/// once).
pub(crate) fn check_introspection(doc: &ExecutableDocument) -> Result<(), TransportError> {
    fn count(set: &SelectionSet) -> usize {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(f) => {
                    let name = f.node.name.node.as_str();
                    usize::from(name == "__schema" || name == "__type")
                        + count(&f.node.selection_set.node)
                }
                Selection::FragmentSpread(_) => 0,
                Selection::InlineFragment(i) => count(&i.node.selection_set.node),
            })
            .sum()
    }
    let total: usize = doc
        .operations
        .iter()
        .map(|(_, op)| count(&op.node.selection_set.node))
        .chain(
            doc.fragments
                .values()
                .map(|f| count(&f.node.selection_set.node)),
        )
        .sum();
    if total > MAX_INTROSPECTION_FIELDS {
        return Err(TransportError::Limit {
            code: "MAX_INTROSPECTION_LIMIT",
            message: format!(
                "the document asks for the schema {total} times (`__schema` or `__type`): at \
                 most {MAX_INTROSPECTION_FIELDS}"
            ),
        });
    }
    Ok(())
}

/// Refuses a document whose brackets nest deeper than [`MAX_NESTING`], before it is parsed.
/// Strings, block strings and comments are skipped: brackets in them do not nest.
pub(crate) fn check_nesting(query: &str) -> Result<(), TransportError> {
    let bytes = query.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            // A string is skipped only when it is closed, as the parser would read it; an
            // unclosed one is not a string to the parser either, so its text is scanned.
            b'"' if bytes[i..].starts_with(b"\"\"\"") => match block_string_end(bytes, i + 3) {
                Some(end) => i = end - 1,
                // Unclosed, the parser reads `""` (an empty string) and goes on after it.
                None => i += 1,
            },
            b'"' => {
                if let Some(end) = string_end(bytes, i + 1) {
                    i = end - 1;
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(TransportError::Limit {
                        code: "MAX_DEPTH_LIMIT",
                        message: format!(
                            "the document nests braces, brackets or parentheses more than \
                             {MAX_NESTING} deep"
                        ),
                    });
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Refuses a document of more than [`MAX_TOKENS`] lexical tokens, before it is parsed. One
/// linear scan that reads tokens as the GraphQL lexer does: whitespace, commas and comments
/// are not tokens; a string or block string is one (skipped as [`check_nesting`] skips
/// them); a name or a number is one; `...` is one; any other character counts as one.
pub(crate) fn check_tokens(query: &str) -> Result<usize, TransportError> {
    let tokens = count_tokens(query, MAX_TOKENS);
    if tokens > MAX_TOKENS {
        return Err(TransportError::Limit {
            code: "MAX_TOKENS_LIMIT",
            message: format!("the document holds more than {MAX_TOKENS} tokens"),
        });
    }
    Ok(tokens)
}

/// The lexical tokens of `query`, counted up to one more than `most`.
fn count_tokens(query: &str, most: usize) -> usize {
    let bytes = query.as_bytes();
    let mut tokens = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let next = match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            // The byte order mark is ignored as whitespace is.
            0xEF if bytes[i..].starts_with(&[0xEF, 0xBB, 0xBF]) => {
                i += 3;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            // Unclosed, the parser reads `""` and goes on after it.
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                block_string_end(bytes, i + 3).unwrap_or(i + 2)
            }
            // Unclosed, the text after it is scanned, as `check_nesting` does.
            b'"' => string_end(bytes, i + 1).unwrap_or(i + 1),
            b'.' if bytes[i..].starts_with(b"...") => i + 3,
            b'-' | b'0'..=b'9' => number_end(bytes, i + 1),
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                let mut end = i + 1;
                while end < bytes.len()
                    && (bytes[end] == b'_' || bytes[end].is_ascii_alphanumeric())
                {
                    end += 1;
                }
                end
            }
            _ => i + 1,
        };
        tokens += 1;
        if tokens > most {
            break;
        }
        i = next;
    }
    tokens
}

/// Where the number whose text goes on at `from` ends: digits, letters, `_` and `.` (as in
/// `-1.5e10`), and a sign right after an exponent's `e`.
fn number_end(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'_' | b'.' => i += 1,
            b'+' | b'-' if matches!(bytes[i - 1], b'e' | b'E') => i += 1,
            b if b.is_ascii_alphanumeric() => i += 1,
            _ => break,
        }
    }
    i
}

/// Where the string whose text starts at `from` ends (just past its closing `"`), if it is
/// closed on its line. `\"` inside is an escaped quote.
fn string_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some(i + 1),
            b'\n' | b'\r' => return None,
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

/// Where the block string whose text starts at `from` ends (just past its closing `"""`),
/// if it is closed at all. `\"""` inside is an escaped triple quote.
fn block_string_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"\\\"\"\"") {
            i += 4;
        } else if bytes[i..].starts_with(b"\"\"\"") {
            return Some(i + 3);
        } else {
            i += 1;
        }
    }
    None
}

/// Refuses a document that selects more than [`MAX_SELECTIONS`] fields with its fragments
/// expanded, counting every operation and every fragment definition (validation walks them
/// all, not only the operation that runs).
pub(crate) fn check_selections(doc: &ExecutableDocument) -> Result<(), TransportError> {
    let mut counter = Counter {
        doc,
        fragments: HashMap::new(),
    };
    let mut total = 0usize;
    let sets = doc
        .operations
        .iter()
        .map(|(_, op)| &op.node.selection_set.node)
        .chain(doc.fragments.values().map(|f| &f.node.selection_set.node));
    for set in sets {
        total = total.saturating_add(counter.count(set, 0)?);
        if total > MAX_SELECTIONS {
            return Err(TransportError::Limit {
                code: "MAX_SELECTIONS_LIMIT",
                message: format!(
                    "the document selects more than {MAX_SELECTIONS} fields once its \
                     fragments are expanded"
                ),
            });
        }
    }
    Ok(())
}

/// Refuses a document with more than [`MAX_DIRECTIVES`] directives in one place: on a field,
/// a fragment spread, an inline fragment, an operation, a fragment definition or a variable
/// definition. Each place of the document is looked at once (spreads are not followed: the
/// fragments they name are looked at where they are defined).
pub(crate) fn check_directives(doc: &ExecutableDocument) -> Result<(), TransportError> {
    for (_, operation) in doc.operations.iter() {
        let pos = operation.pos;
        let operation = &operation.node;
        directives_within(&operation.directives, "the operation", pos)?;
        for variable in &operation.variable_definitions {
            let name = &variable.node.name.node;
            directives_within(
                &variable.node.directives,
                &format!("the variable `${name}`"),
                variable.pos,
            )?;
        }
        directives_in(&operation.selection_set.node)?;
    }
    for (name, fragment) in &doc.fragments {
        directives_within(
            &fragment.node.directives,
            &format!("the fragment `{name}`"),
            fragment.pos,
        )?;
        directives_in(&fragment.node.selection_set.node)?;
    }
    Ok(())
}

/// The directives of every selection in `set`, and in the sets within (nesting is bounded by
/// [`check_nesting`]).
fn directives_in(set: &SelectionSet) -> Result<(), TransportError> {
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => {
                let name = &f.node.name.node;
                directives_within(&f.node.directives, &format!("the field `{name}`"), f.pos)?;
                directives_in(&f.node.selection_set.node)?;
            }
            Selection::FragmentSpread(s) => {
                let name = &s.node.fragment_name.node;
                directives_within(
                    &s.node.directives,
                    &format!("the spread of `{name}`"),
                    s.pos,
                )?;
            }
            Selection::InlineFragment(i) => {
                directives_within(&i.node.directives, "an inline fragment", i.pos)?;
                directives_in(&i.node.selection_set.node)?;
            }
        }
    }
    Ok(())
}

fn directives_within(
    directives: &[Positioned<Directive>],
    place: &str,
    pos: Pos,
) -> Result<(), TransportError> {
    if directives.len() <= MAX_DIRECTIVES {
        return Ok(());
    }
    Err(TransportError::Limit {
        code: "MAX_DIRECTIVES_LIMIT",
        message: format!(
            "{place} (line {}, column {}) carries {} directives: at most {MAX_DIRECTIVES} \
             may stand in one place",
            pos.line,
            pos.column,
            directives.len()
        ),
    })
}

/// Expanded sizes, memoized per fragment.
struct Counter<'a> {
    doc: &'a ExecutableDocument,
    /// `None` while a fragment is being counted: a spread of it then is a cycle, which
    /// validation reports; it counts 0 here.
    fragments: HashMap<&'a Name, Option<usize>>,
}

impl<'a> Counter<'a> {
    fn count(&mut self, set: &'a SelectionSet, spreads: usize) -> Result<usize, TransportError> {
        let mut size = 0usize;
        for item in &set.items {
            let n = match &item.node {
                Selection::Field(f) => {
                    1usize.saturating_add(self.count(&f.node.selection_set.node, spreads)?)
                }
                Selection::InlineFragment(i) => self.count(&i.node.selection_set.node, spreads)?,
                Selection::FragmentSpread(s) => {
                    self.fragment(&s.node.fragment_name.node, spreads)?
                }
            };
            size = size.saturating_add(n);
        }
        Ok(size)
    }

    fn fragment(&mut self, name: &'a Name, spreads: usize) -> Result<usize, TransportError> {
        match self.fragments.get(name) {
            Some(Some(size)) => return Ok(*size),
            Some(None) => return Ok(0),
            None => {}
        }
        let Some(fragment) = self.doc.fragments.get(name) else {
            // Refused here rather than by validation: async-graphql's own depth check walks
            // every path through the spreads before validation would say so.
            return Err(TransportError::Invalid(format!(
                "unknown fragment \"{name}\""
            )));
        };
        if spreads >= MAX_SPREAD_DEPTH {
            return Err(TransportError::Limit {
                code: "MAX_DEPTH_LIMIT",
                message: format!(
                    "fragments are spread within each other more than {MAX_SPREAD_DEPTH} deep"
                ),
            });
        }
        self.fragments.insert(name, None);
        let size = self.count(&fragment.node.selection_set.node, spreads + 1)?;
        self.fragments.insert(name, Some(size));
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    #[test]
    fn a_few_schema_walks_pass_and_aliases_of_many_are_refused() {
        let walk = "__schema { types { name } }";
        let three = format!("{{ a: {walk} b: {walk} __type(name: \"Query\") {{ name }} }}");
        assert!(check_parsed(&parse_query(three).unwrap()).is_ok());
        let four = format!("{{ a: {walk} b: {walk} c: {walk} d: {walk} }}");
        assert_eq!(
            code(check_parsed(&parse_query(four).unwrap())),
            Some("MAX_INTROSPECTION_LIMIT")
        );
        // In fragments too.
        let spread =
            format!("{{ ...F }} fragment F on Query {{ a: {walk} b: {walk} c: {walk} d: {walk} }}");
        assert_eq!(
            code(check_parsed(&parse_query(spread).unwrap())),
            Some("MAX_INTROSPECTION_LIMIT")
        );
    }

    fn code<T>(result: Result<T, TransportError>) -> Option<&'static str> {
        result.err().map(|e| e.code())
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!(
            "{{ __typename(x: {}1{}) }}",
            "[".repeat(1600),
            "]".repeat(1600)
        );
        assert_eq!(code(check_nesting(&deep)), Some("MAX_DEPTH_LIMIT"));
        let objects = format!("{{ a(x: {}) }}", "{a: ".repeat(100) + &"}".repeat(100));
        assert_eq!(code(check_nesting(&objects)), Some("MAX_DEPTH_LIMIT"));
        let fine = format!("{{ a(x: {}1{}) }}", "[".repeat(20), "]".repeat(20));
        assert_eq!(code(check_nesting(&fine)), None);
    }

    #[test]
    fn an_unclosed_string_hides_nothing() {
        // The parser reads an unclosed `"""` as `""` and goes on: so must the scan.
        let block = format!(
            "{{ __typename(x: [\"\"\" x\" {}1{}]) }}",
            "[".repeat(400),
            "]".repeat(400)
        );
        assert_eq!(code(check_nesting(&block)), Some("MAX_DEPTH_LIMIT"));
        let line = format!(
            "{{ a(x: \"open\n{}1{}) }}",
            "[".repeat(400),
            "]".repeat(400)
        );
        assert_eq!(code(check_nesting(&line)), Some("MAX_DEPTH_LIMIT"));
    }

    /// The deepest nesting of list and object values in a document's arguments.
    fn value_depth(doc: &ExecutableDocument) -> usize {
        fn depth(value: &async_graphql::Value) -> usize {
            match value {
                async_graphql::Value::List(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
                async_graphql::Value::Object(fields) => {
                    1 + fields.values().map(depth).max().unwrap_or(0)
                }
                _ => 0,
            }
        }
        doc.operations
            .iter()
            .flat_map(|(_, op)| op.node.selection_set.node.items.iter())
            .filter_map(|item| match &item.node {
                Selection::Field(f) => Some(f),
                _ => None,
            })
            .flat_map(|f| f.node.arguments.iter())
            .map(|(_, v)| depth(&v.node.clone().into_const().unwrap_or_default()))
            .max()
            .unwrap_or(0)
    }

    /// A small deterministic generator of valid argument values: nested lists and objects,
    /// numbers, strings and block strings full of brackets, quotes and escapes, comments full
    /// of brackets between items, and (as a list item) the parser's reading of an unclosed
    /// `"""`: `""` then a string; with the value's nesting depth.
    struct Values {
        state: u64,
        /// Whether this document may still take its one unclosed `"""`.
        trick_left: bool,
    }

    impl Values {
        fn next(&mut self, below: u64) -> u64 {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            self.state % below
        }

        fn noise(&mut self, pieces: &[&str]) -> String {
            let len = self.next(12);
            (0..len)
                .map(|_| pieces[self.next(pieces.len() as u64) as usize])
                .collect()
        }

        fn value(&mut self, budget: usize, trick: bool, in_list: bool) -> (String, usize) {
            // Down to the budget (siblings are the leaves on the way).
            let kind = match budget {
                0 => self.next(3),
                _ => 3 + self.next(3),
            };
            match kind {
                0 => ("1".into(), 0),
                1 => {
                    let text = self.noise(&["[", "]", "{", "a", "#", " ", "\\\"", "\\\\", "}"]);
                    (format!("\"{text}\""), 0)
                }
                // No block string in a document with the trick: it would close the `"""`.
                2 if trick && in_list && self.trick_left => {
                    self.trick_left = false;
                    (format!("\"\"\" {}\"", self.noise(&["x", "[", "{"])), 0)
                }
                2 if trick => ("1".into(), 0),
                2 => {
                    let text = self.noise(&["[", "{", "a", "\"a", "\n", "#", "\\\"\"\"", "("]);
                    (format!("\"\"\"{text}\"\"\""), 0)
                }
                3 | 4 => {
                    let mut items = Vec::new();
                    let mut deepest = 0;
                    let count = 1 + self.next(3);
                    for n in 0..count {
                        // The last item goes down; the siblings before it stay shallow (so
                        // what they hide from a careless scan comes before the depth).
                        let below = if n + 1 == count { budget - 1 } else { 0 };
                        let (item, depth) = self.value(below, trick, true);
                        deepest = deepest.max(depth);
                        items.push(item);
                        if self.next(4) == 0 {
                            let quotes = if trick {
                                &["[", "{"][..]
                            } else {
                                &["[", "{", "\""][..]
                            };
                            items.push(format!("# [[[{} \n", self.noise(quotes)));
                        }
                    }
                    (format!("[{}]", items.join(" ")), deepest + 1)
                }
                _ => {
                    let (inner, depth) = self.value(budget - 1, trick, false);
                    (format!("{{a: {inner}}}"), depth + 1)
                }
            }
        }
    }

    #[test]
    fn the_scan_counts_exactly_the_nesting_the_parser_sees() {
        // `{ a(x: ...) }` adds two levels to the value's own.
        let mut values = Values {
            state: 0x2545_f491_4f6c_dd1d,
            trick_left: false,
        };
        let (mut refused, mut passed) = (0, 0);
        for round in 0..600 {
            // At most one unclosed `"""` per document: a later `"""` would close it.
            let trick = round % 3 == 0;
            values.trick_left = trick;
            let budget = values.next(90) as usize;
            let (value, depth) = values.value(budget, trick, false);
            let query = format!("{{ a(x: {value}) }}");
            let doc = parse_query(&query).unwrap_or_else(|e| panic!("{e}: {query}"));
            assert_eq!(value_depth(&doc), depth, "{query}");
            let expected = depth + 2 <= MAX_NESTING;
            assert_eq!(
                check_nesting(&query).is_ok(),
                expected,
                "depth {depth}: {query}"
            );
            if expected { passed += 1 } else { refused += 1 }
        }
        assert!(
            passed > 100 && refused > 100,
            "passed {passed}, refused {refused}"
        );
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_nest() {
        let brackets = "[".repeat(500);
        for query in [
            format!("{{ a(x: \"{brackets}\") }}"),
            format!("{{ a(x: \"\"\"{brackets} \\\"\"\" {brackets}\"\"\") }}"),
            format!("# {brackets}\n{{ a }}"),
            format!("{{ a(x: \"\\\"{brackets}\") }}"),
        ] {
            assert_eq!(code(check_nesting(&query)), None, "{query}");
        }
    }

    #[test]
    fn tokens_are_counted_as_the_lexer_reads_them() {
        let count = |query: &str| count_tokens(query, usize::MAX);
        // query Q ( $ v : Int = -1.5e+10 ) { a ( x : "..." y : """...""" ) ... F }
        let query =
            r#"query Q($v: Int = -1.5e+10) { a(x: "s p a c e s, #", y: """b l \""" k""") ...F }"#;
        assert_eq!(count(query), 23, "{query}");
        // Whitespace, commas, comments and the byte order mark are not tokens.
        assert_eq!(count("\u{feff}{ a, b # c d e f\n c }"), 5);
        // An unclosed block string is `""` then an unclosed `"`, as the parser reads it; the
        // text after it is still counted.
        assert_eq!(count(r#"{ a(x: """ b c) }"#), 11);
        assert_eq!(count(""), 0);
    }

    #[test]
    fn a_flood_of_tokens_is_refused_before_parsing() {
        let flood = format!("{{ {} }}", "a ".repeat(MAX_TOKENS));
        assert_eq!(code(check_tokens(&flood)), Some("MAX_TOKENS_LIMIT"));
        let directives = format!("{{ a {} }}", "@include(if: true) ".repeat(30_000));
        assert_eq!(code(check_tokens(&directives)), Some("MAX_TOKENS_LIMIT"));
        // Inside strings and comments, nothing is a token.
        let long_string = format!("{{ a(x: \"{}\") }}", "a ".repeat(MAX_TOKENS));
        assert_eq!(code(check_tokens(&long_string)), None);
        let long_comment = format!("# {}\n{{ a }}", "a ".repeat(MAX_TOKENS));
        assert_eq!(code(check_tokens(&long_comment)), None);
    }

    #[test]
    fn the_checked_in_operations_are_far_within_the_token_limit() {
        let operations = crate::transport::playground::example_operations();
        assert!(!operations.is_empty());
        for op in operations {
            let tokens = count_tokens(&op.query, usize::MAX);
            assert!(tokens * 10 < MAX_TOKENS, "{}: {tokens} tokens", op.name);
        }
    }

    #[test]
    fn directive_floods_are_refused_wherever_they_stand() {
        let many = "@include(if: true) ".repeat(MAX_DIRECTIVES + 1);
        let few = "@include(if: true) @skip(if: false) ";
        for (query, place) in [
            (format!("{{ me {{ id {many} }} }}"), "the field `id`"),
            (
                format!("{{ ...F {many} }} fragment F on Query {{ me {{ id }} }}"),
                "the spread of `F`",
            ),
            (
                format!("{{ ... {many} {{ me {{ id }} }} }}"),
                "an inline fragment",
            ),
            (format!("query Q {many} {{ me {{ id }} }}"), "the operation"),
            (
                format!("{{ me {{ id }} }} fragment F on Query {many} {{ me {{ id }} }}"),
                "the fragment `F`",
            ),
            (
                format!("query Q($v: Int {many}) {{ me {{ id }} }}"),
                "the variable `$v`",
            ),
        ] {
            let result = check_directives(&parse_query(&query).unwrap());
            let Err(TransportError::Limit { code, message }) = result else {
                panic!("not refused: {query}");
            };
            assert_eq!(code, "MAX_DIRECTIVES_LIMIT");
            assert!(message.starts_with(place), "{message}");
            assert!(
                message.contains(&format!("at most {MAX_DIRECTIVES}")),
                "{message}"
            );
        }
        let fine = format!("{{ me {{ id {few} ...F {few} }} }} fragment F on Customer {{ name }}");
        assert_eq!(code(check_directives(&parse_query(&fine).unwrap())), None);
    }

    /// Each fragment spreads the next one twice: 2^levels fields once expanded.
    fn doubling(levels: usize) -> ExecutableDocument {
        let mut query = String::from("{ ...F0 }\n");
        for level in 0..levels {
            let next = level + 1;
            query.push_str(&format!(
                "fragment F{level} on Query {{ ...F{next} ...F{next} }}\n"
            ));
        }
        query.push_str(&format!("fragment F{levels} on Query {{ __typename }}"));
        parse_query(&query).unwrap()
    }

    #[test]
    fn fragment_doubling_is_refused_without_expanding_it() {
        assert_eq!(
            code(check_selections(&doubling(40))),
            Some("MAX_DEPTH_LIMIT")
        );
        assert_eq!(
            code(check_selections(&doubling(22))),
            Some("MAX_SELECTIONS_LIMIT")
        );
        assert_eq!(code(check_selections(&doubling(8))), None);
    }

    #[test]
    fn fragment_fan_outs_are_refused_even_when_they_end_in_nothing() {
        // Each fragment spreads the next ten times; the last is unknown (selects nothing), or
        // selects one field: 10^7 paths for async-graphql's own depth check to walk.
        let fan_out = |last: &str| {
            let mut query = String::from("{ ...F0 }\n");
            for level in 0..7 {
                let spreads = format!("...F{} ", level + 1).repeat(10);
                query.push_str(&format!("fragment F{level} on Query {{ {spreads} }}\n"));
            }
            query.push_str(&format!("fragment F7 on Query {{ {last} }}"));
            parse_query(&query).unwrap()
        };
        let unknown = fan_out("...Missing");
        assert_eq!(
            code(check_selections(&unknown)),
            Some("GRAPHQL_VALIDATION_FAILED")
        );
        assert_eq!(
            code(check_selections(&fan_out("__typename"))),
            Some("MAX_SELECTIONS_LIMIT")
        );
    }

    #[test]
    fn ordinary_documents_and_cycles_pass() {
        let doc = parse_query(
            "query A { me { id ...C } } query B { me { ...C } } fragment C on Customer { name }",
        )
        .unwrap();
        assert_eq!(code(check_selections(&doc)), None);
        // Cycles are validation's to report; counting them must still end.
        let doc = parse_query("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }")
            .unwrap();
        assert_eq!(code(check_selections(&doc)), None);
        let aliases: String = (0..MAX_SELECTIONS + 1)
            .map(|i| format!("a{i}: __typename "))
            .collect();
        let doc = parse_query(format!("{{ {aliases} }}")).unwrap();
        assert_eq!(code(check_selections(&doc)), Some("MAX_SELECTIONS_LIMIT"));
    }
}
