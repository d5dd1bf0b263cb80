//! Parsed documents, by their text: apps send the same few documents again and again, and
//! lexing, bounding and parsing one costs more than running it on cached data.
//!
//! Only a document that parsed and passed the limits of its text and of its parsed form
//! (`limits::check_text`, `limits::check_parsed`) is kept; those checks depend on nothing
//! but the text, so a document found here needs none of them again. Everything that depends
//! on the request (the operation it names, its variables, who calls) is still checked on
//! every request.
//!
//! The cache is bounded by what its documents cost in memory, estimated from their text
//! and tokens ([`weight`]): a parsed form can be a hundred times its text (a list of small
//! objects), so the text's length alone would let a flood of such documents hold hundreds
//! of MiB. A document longer than [`MAX_DOCUMENT_BYTES`] is parsed every time, so a few
//! large documents cannot push out the apps' many small ones.

use std::sync::Arc;

use async_graphql::parser::types::ExecutableDocument;

use super::error::TransportError;
use super::limits;

/// Most memory the cache's documents may take, as [`weight`] estimates it.
const MAX_WEIGHT: u64 = 32 * 1024 * 1024;

/// Longest document text kept.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// At least what one token of a document takes once parsed: a selection with its name,
/// arguments, directives and selection set (the largest node) is about 200 bytes; a value
/// in a list or an object less.
const BYTES_PER_TOKEN: usize = 256;

/// What a document of `text_bytes` with `tokens` tokens takes in the cache, at most.
fn weight(text_bytes: usize, tokens: usize) -> u32 {
    let bytes = text_bytes.saturating_add(tokens.saturating_mul(BYTES_PER_TOKEN));
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// A parsed document, and what it weighs.
#[derive(Clone)]
struct Kept {
    document: Arc<ExecutableDocument>,
    weight: u32,
}

/// Parsed documents by their text.
pub(crate) struct ParsedDocuments {
    documents: moka::sync::Cache<Arc<str>, Kept>,
}

impl Default for ParsedDocuments {
    fn default() -> Self {
        Self {
            documents: moka::sync::Cache::builder()
                .weigher(|_: &Arc<str>, kept: &Kept| kept.weight)
                .max_capacity(MAX_WEIGHT)
                .build(),
        }
    }
}

impl ParsedDocuments {
    /// The document `text` parses to, within the limits: from the cache, or bounded, parsed,
    /// bounded again and kept.
    pub(crate) fn parse(&self, text: &str) -> Result<Arc<ExecutableDocument>, TransportError> {
        if let Some(kept) = self.documents.get(text) {
            return Ok(kept.document);
        }
        let tokens = limits::check_text(text)?;
        let document = async_graphql::parser::parse_query(text).map_err(|e| {
            let e = async_graphql::ServerError::from(e);
            TransportError::Parse {
                message: e.message,
                locations: e.locations,
            }
        })?;
        limits::check_parsed(&document)?;
        let document = Arc::new(document);
        if text.len() <= MAX_DOCUMENT_BYTES {
            let kept = Kept {
                document: Arc::clone(&document),
                weight: weight(text.len(), tokens),
            };
            self.documents.insert(Arc::from(text), kept);
        }
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_parsed_once_and_found_again() {
        let documents = ParsedDocuments::default();
        let first = documents.parse("{ me { id } }").unwrap();
        let again = documents.parse("{ me { id } }").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }

    #[test]
    fn documents_that_fail_are_refused_every_time_and_not_kept() {
        let documents = ParsedDocuments::default();
        for _ in 0..2 {
            assert!(matches!(
                documents.parse("{ me { id }"),
                Err(TransportError::Parse { .. })
            ));
        }
        let deep = format!("{}{}", "{ a ".repeat(200), "}".repeat(200));
        for _ in 0..2 {
            assert!(matches!(
                documents.parse(&deep),
                Err(TransportError::Limit { .. })
            ));
        }
        documents.documents.run_pending_tasks();
        assert_eq!(documents.documents.entry_count(), 0);
    }

    /// A list of small objects parses to about a hundred times its text: such documents are
    /// weighed by their tokens, so a flood of them keeps only a few.
    #[test]
    fn documents_are_weighed_by_their_tokens_not_only_their_text() {
        let documents = ParsedDocuments::default();
        for i in 0..40 {
            let objects = vec!["{a:1}"; 2990].join(" ");
            let text = format!("{{ x{i}(a: [{objects}]) }}");
            assert!(text.len() < 20_000);
            documents.parse(&text).unwrap();
        }
        documents.documents.run_pending_tasks();
        assert!(documents.documents.weighted_size() <= MAX_WEIGHT);
        assert!(
            documents.documents.entry_count() <= 9,
            "{} kept",
            documents.documents.entry_count()
        );
    }
}
