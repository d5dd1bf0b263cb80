//! `switchyard check-operations <manifest>...`: the breaking-change check. Would the
//! operations of the app versions still in use still run on this build's schema?
//!
//! Each manifest (Apollo's persisted query manifest, or the `{hash: document}` map Relay and
//! GraphQL Codegen write) is read whole first: a file that cannot be read or is not a manifest
//! is [`UnusableManifest`], and nothing is checked. Then every operation is parsed and
//! validated against the schema a client of the default profile sees (introspection and the
//! federation fields on), with async-graphql's own validation rules, the same that run on
//! every request: a removed field, a changed type, a new required argument, a removed enum
//! value or input field each make it fail. Its id must be the SHA-256 of its body, or the
//! server would not serve it under that id.
//!
//! async-graphql's rule that a variable's declared type fits where it is passed never fires
//! in 7.2.1 (see `variables`), so that one is checked here, from the schema's SDL.
//!
//! Validation runs without executing anything: async-graphql 7 keeps its rule runner
//! (`validation::check_rules`) crate-private, so the check runs `Schema::execute` on a schema
//! with [`ValidateOnly`], an extension whose `execute` hook answers before any resolver runs.
//! Parsing and validation happen as for a request; execution never starts (the schema has
//! no ports, no upstream is called).
//!
//! What depends on a request's variables is left out, as the manifest has none: argument
//! values given as variables are not checked against the arguments (their declared types
//! are), and the cost limit (which counts `first` and `ids`) is not applied. The depth limit
//! is.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute};
use async_graphql::{Request, Response, ServerError};

use crate::transport::{ManifestOperation, manifest_operations, sha256_hex};

mod variables;

use variables::InputTypes;

/// How many hex digits of an id the report shows.
const SHORT_ID: usize = 12;

/// A manifest file, read and understood.
pub struct Manifest {
    /// Where it was read from, as given on the command line (the report names it so).
    path: PathBuf,
    /// Its operations, in the file's order.
    operations: Vec<ManifestOperation>,
}

/// A manifest that cannot be checked: the file cannot be read, or is not a manifest.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct UnusableManifest {
    /// The file.
    path: PathBuf,
    /// Why it cannot be checked, for the person who passed it.
    reason: String,
}

impl Manifest {
    /// Reads the manifest at `path`.
    pub fn read(path: &Path) -> Result<Self, UnusableManifest> {
        let unusable = |reason: String| UnusableManifest {
            path: path.to_owned(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| unusable(format!("cannot be read: {e}")))?;
        let operations = manifest_operations(&text).map_err(|e| {
            unusable(format!(
                "is not a persisted query manifest (Apollo's format, or a JSON object of \
                 hash to document): {e:#}"
            ))
        })?;
        Ok(Self {
            path: path.to_owned(),
            operations,
        })
    }
}

/// What the check found.
pub struct Report {
    /// Operations checked, over all manifests.
    checked: usize,
    /// Manifests checked.
    manifests: usize,
    /// The operations that would break, in the manifests' order.
    broken: Vec<BrokenOperation>,
}

/// An operation that would break, and why.
struct BrokenOperation {
    /// The manifest it is in.
    manifest: PathBuf,
    /// Its name (the manifest's, or its document's).
    name: String,
    /// Its id, as the manifest gives it.
    id: String,
    /// Everything wrong with it.
    problems: Vec<Problem>,
}

/// One thing wrong with an operation.
struct Problem {
    /// Line and column in the operation's body, where the error has one.
    location: Option<(usize, usize)>,
    /// What is wrong, in async-graphql's words (or ours, for the id).
    message: String,
}

impl Report {
    /// Whether every operation would still run.
    pub fn is_clean(&self) -> bool {
        self.broken.is_empty()
    }
}

/// Checks every operation of `manifests` against the schema; fails only if the schema's own
/// SDL cannot be read (a bug).
pub async fn check(manifests: &[Manifest]) -> anyhow::Result<Report> {
    let schema = resolvers::schema_builder()
        // The cost of an operation depends on its variables, which a manifest does not have.
        .limit_complexity(usize::MAX)
        .extension(ValidateOnly)
        .finish();
    let types = InputTypes::from_sdl(&schema.sdl())
        .map_err(|e| anyhow::anyhow!("reading the schema's SDL: {e}"))?;
    let mut report = Report {
        checked: 0,
        manifests: manifests.len(),
        broken: Vec::new(),
    };
    for manifest in manifests {
        let mut ids = std::collections::HashSet::new();
        for op in &manifest.operations {
            report.checked += 1;
            let (document_name, mut problems) = validate(&schema, &types, op).await;
            if !ids.insert(op.id.as_str()) {
                problems.push(Problem {
                    location: None,
                    message: "another operation of this manifest has the same id".into(),
                });
            }
            let actual = sha256_hex(&op.body);
            if actual != op.id {
                problems.push(Problem {
                    location: None,
                    message: format!(
                        "its id is not the SHA-256 of its body (that is {}…): the server \
                         would not serve it under this id",
                        short(&actual)
                    ),
                });
            }
            if !problems.is_empty() {
                report.broken.push(BrokenOperation {
                    manifest: manifest.path.clone(),
                    name: op
                        .name
                        .clone()
                        .or(document_name)
                        .unwrap_or_else(|| "(anonymous)".into()),
                    id: op.id.clone(),
                    problems,
                });
            }
        }
    }
    Ok(report)
}

/// Parses and validates `op`: the name of its document's operation, and what is wrong.
async fn validate(
    schema: &resolvers::AppSchema,
    types: &InputTypes,
    op: &ManifestOperation,
) -> (Option<String>, Vec<Problem>) {
    // The server's own bounds first (they also bound the time this check takes).
    let beyond = |e: crate::transport::TransportError| {
        let problem = Problem {
            location: None,
            message: format!("the server refuses it: {e}"),
        };
        (None, vec![problem])
    };
    if let Err(e) = crate::transport::check_text(&op.body) {
        return beyond(e);
    }
    let mut request = Request::new(op.body.clone());
    let document = match request.parsed_query() {
        Ok(document) => document,
        Err(error) => return (None, problems(vec![error])),
    };
    if let Err(e) = crate::transport::check_parsed(document) {
        return beyond(e);
    }
    let names: Vec<Option<String>> = document
        .operations
        .iter()
        .map(|(name, _)| name.map(|n| n.to_string()))
        .collect();
    let misused = types.misused_variables(document);
    // A document of several operations runs the one the manifest names.
    if names.len() > 1
        && let Some(name) = &op.name
    {
        request = request.operation_name(name.clone());
    }
    let response = schema.execute(request).await;
    let mut errors: Vec<ServerError> = response
        .errors
        .into_iter()
        .filter(|error| !is_missing_variable_value(error))
        .collect();
    errors.extend(
        misused
            .into_iter()
            .map(|(pos, message)| ServerError::new(message, Some(pos))),
    );
    (names.into_iter().flatten().next(), problems(errors))
}

/// Whether `error` only says that a variable has no value (`Variable first is not
/// defined.`): what computing a field's cost from an argument given as a variable reports
/// when no variables are sent, as a manifest has none. A variable the operation does not
/// declare is reported by validation in its own words (`Variable "$first" is not defined by
/// operation ...`).
fn is_missing_variable_value(error: &ServerError) -> bool {
    error
        .message
        .strip_prefix("Variable ")
        .and_then(|rest| rest.strip_suffix(" is not defined."))
        .is_some_and(|name| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// The errors as problems, each once (async-graphql reports some twice).
fn problems(errors: Vec<ServerError>) -> Vec<Problem> {
    let mut problems: Vec<Problem> = Vec::new();
    for error in errors {
        let problem = Problem {
            location: error.locations.first().map(|pos| (pos.line, pos.column)),
            message: one_line(&error.message),
        };
        if !problems
            .iter()
            .any(|p| p.location == problem.location && p.message == problem.message)
        {
            problems.push(problem);
        }
    }
    problems
}

/// A message on one line. A syntax error comes as the parser drew it (the line, a caret,
/// `= expected selection`): its `= ...` lines say what was wrong, the location is the error's.
fn one_line(message: &str) -> String {
    if !message.contains('\n') {
        return message.to_owned();
    }
    let said: Vec<&str> = message
        .lines()
        .filter_map(|line| line.trim().strip_prefix("= "))
        .collect();
    if said.is_empty() {
        message.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        format!("syntax error: {}", said.join("; "))
    }
}

/// The first [`SHORT_ID`] characters of an id.
fn short(id: &str) -> &str {
    id.get(..SHORT_ID).unwrap_or(id)
}

impl fmt::Display for Report {
    /// One line per operation that would break, then the summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for op in &self.broken {
            write!(
                f,
                "{}: {} ({}): ",
                op.manifest.display(),
                op.name,
                short(&op.id)
            )?;
            for (i, problem) in op.problems.iter().enumerate() {
                if i > 0 {
                    f.write_str("; ")?;
                }
                if let Some((line, column)) = problem.location {
                    write!(f, "{line}:{column}: ")?;
                }
                f.write_str(&problem.message)?;
            }
            writeln!(f)?;
        }
        let plural = |n: usize, word: &str| {
            if n == 1 {
                format!("{n} {word}")
            } else {
                format!("{n} {word}s")
            }
        };
        writeln!(
            f,
            "{} checked in {}, {} would break",
            plural(self.checked, "operation"),
            plural(self.manifests, "manifest"),
            self.broken.len()
        )
    }
}

/// The extension that stops a request after validation: its `execute` hook answers an empty
/// response without running the operation, so no resolver runs.
struct ValidateOnly;

impl ExtensionFactory for ValidateOnly {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ValidateOnly)
    }
}

#[async_trait::async_trait]
impl Extension for ValidateOnly {
    async fn execute(
        &self,
        _ctx: &ExtensionContext<'_>,
        _operation_name: Option<&str>,
        _next: NextExecute<'_>,
    ) -> Response {
        Response::new(async_graphql::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(operations: &[(&str, &str)]) -> Manifest {
        Manifest {
            path: PathBuf::from("app.json"),
            operations: operations
                .iter()
                .map(|(name, body)| ManifestOperation {
                    id: sha256_hex(body),
                    name: Some((*name).to_owned()),
                    body: (*body).to_owned(),
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn a_valid_operation_is_validated_but_not_run() {
        // Run, it would fail: the schema has no ports, and `me` needs a signed-in viewer.
        let report = check(&[manifest(&[(
            "Me",
            "query Me($first: Int!) { me { name orders(first: $first) { nodes { id } } } }",
        )])])
        .await
        .unwrap();
        assert!(report.is_clean(), "{report}");
        assert_eq!(
            report.to_string(),
            "1 operation checked in 1 manifest, 0 would break\n"
        );
    }

    #[tokio::test]
    async fn each_error_is_reported_with_its_location() {
        let report = check(&[manifest(&[
            ("Fine", "{ __typename }"),
            ("Broken", "query Broken {\n  me { nickname }\n}"),
            ("Unparsable", "query Unparsable {"),
        ])])
        .await
        .unwrap();
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("app.json: Broken ("), "{text}");
        assert!(
            lines[0].contains("2:8: Unknown field \"nickname\""),
            "{text}"
        );
        assert!(lines[1].starts_with("app.json: Unparsable ("), "{text}");
        assert!(
            lines[1].ends_with("): 1:19: syntax error: expected selection"),
            "{text}"
        );
        assert_eq!(
            lines[2],
            "3 operations checked in 1 manifest, 2 would break"
        );
    }

    #[tokio::test]
    async fn what_the_server_refuses_is_reported_and_doubled_fragments_take_no_time() {
        // 30 levels of doubling spreads: 2^30 fields, were they expanded.
        let mut doubling = String::from("{ ...F0 }");
        for level in 0..30 {
            let next = level + 1;
            doubling.push_str(&format!(
                " fragment F{level} on Query {{ ...F{next} ...F{next} }}"
            ));
        }
        doubling.push_str(" fragment F30 on Query { __typename }");
        let aliases: String = (0..20_000).map(|i| format!("a{i}: __typename ")).collect();
        let report = check(&[manifest(&[
            ("Doubling", &doubling),
            ("Aliases", &format!("{{ {aliases} }}")),
            ("Fine", "{ __typename }"),
            ("Fine", "{ __typename }"),
        ])])
        .await
        .unwrap();
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("app.json: Doubling ("), "{text}");
        assert!(
            lines[0].ends_with("): the server refuses it: the document selects more than 2000 fields once its fragments are expanded"),
            "{text}"
        );
        assert!(lines[1].starts_with("app.json: Aliases ("), "{text}");
        assert!(
            lines[1].ends_with("the document holds more than 15000 tokens"),
            "{text}"
        );
        assert!(
            lines[2].ends_with("another operation of this manifest has the same id"),
            "{text}"
        );
        assert_eq!(
            lines[3],
            "4 operations checked in 1 manifest, 3 would break"
        );
    }

    #[tokio::test]
    async fn an_undeclared_variable_is_reported() {
        let report = check(&[manifest(&[(
            "Orders",
            "query Orders { me { orders(first: $first) { nodes { id } } } }",
        )])])
        .await
        .unwrap();
        let text = report.to_string();
        assert!(text.starts_with("app.json: Orders (",), "{text}");
        assert!(
            text.lines().next().is_some_and(|line| line
                .ends_with("): 1:1: Variable \"$first\" is not defined by operation \"Orders\"")),
            "{text}"
        );
    }
}
