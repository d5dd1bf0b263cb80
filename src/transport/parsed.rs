//! Parsed documents, by their text: apps send the same few documents again and again, and
//! lexing, bounding and parsing one costs more than running it on cached data.
//!
//! Only a document that parsed and passed the limits of its text and of its parsed form
//! (`limits::check_text`, `limits::check_parsed`) is kept; those checks depend on nothing
//! but the text, so a document found here needs none of them again. Everything that depends
//! on the request (the operation it names, its variables, who calls) is still checked on
//! every request. The cache is bounded by the total length of the texts it keeps
//! ([`MAX_TEXT_BYTES`]); a document longer than [`MAX_DOCUMENT_BYTES`] is parsed every time,
//! so a few large documents cannot push out the apps' many small ones.

use std::sync::Arc;

use async_graphql::parser::types::ExecutableDocument;

use super::error::TransportError;
use super::limits;

/// Most text the cache keeps, summed over its documents (their parsed forms take a few
/// times more).
const MAX_TEXT_BYTES: u64 = 4 * 1024 * 1024;

/// Longest document text kept.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Parsed documents by their text.
pub(crate) struct ParsedDocuments {
    documents: moka::sync::Cache<Arc<str>, Arc<ExecutableDocument>>,
}

impl Default for ParsedDocuments {
    fn default() -> Self {
        Self {
            documents: moka::sync::Cache::builder()
                .weigher(|text: &Arc<str>, _: &Arc<ExecutableDocument>| {
                    u32::try_from(text.len()).unwrap_or(u32::MAX)
                })
                .max_capacity(MAX_TEXT_BYTES)
                .build(),
        }
    }
}

impl ParsedDocuments {
    /// The document `text` parses to, within the limits: from the cache, or bounded, parsed,
    /// bounded again and kept.
    pub(crate) fn parse(&self, text: &str) -> Result<Arc<ExecutableDocument>, TransportError> {
        if let Some(document) = self.documents.get(text) {
            return Ok(document);
        }
        limits::check_text(text)?;
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
            self.documents
                .insert(Arc::from(text), Arc::clone(&document));
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
}
