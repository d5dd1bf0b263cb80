//! The bounds a document must keep before anything walks it: the parser, async-graphql's
//! validation, and our own passes over the document and its result.
//!
//! Both checks are cheap, linear passes, and run in [`super::pipeline::prepare`], the one
//! place every transport hands a document to:
//! - [`check_nesting`] reads the raw text before it is parsed: the parser recurses once per
//!   nested `{`, `[` or `(`, so a 3 KB document of nested list values would overflow the
//!   stack and abort the process.
//! - [`check_selections`] counts the fields a document selects once every fragment spread is
//!   expanded (memoized per fragment, so it costs the document's size, not the expansion's):
//!   a few hundred bytes that double a spread at each level would otherwise select millions
//!   of fields for validation and execution to walk.
//!
//! The introspection-only rule (`introspection_too_nested`) lives in [`super::document`].

use std::collections::HashMap;

use async_graphql::Name;
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

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
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    // `\"""` is an escaped triple quote inside a block string.
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
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
            // An unknown fragment: validation reports it.
            return Ok(0);
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

    fn code(result: Result<(), TransportError>) -> Option<&'static str> {
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
