//! `switchyard check-operations`, the breaking-change check, as CI runs it: the real binary
//! on manifest files, its report on stdout, its exit status (0 nothing breaks, 1 something
//! would, 2 a manifest is unusable).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// What the binary answered.
struct Checked {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

fn check_operations(manifests: &[&Path]) -> Checked {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check-operations")
        .args(manifests)
        .env_remove("SWITCHYARD_CONFIG")
        .output()
        .unwrap();
    Checked {
        status: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// A directory of this test's own for its manifest files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-check-operations-{}-{test}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// An Apollo manifest of `(name, body)` operations, each under its body's hash.
fn apollo_manifest(operations: &[(&str, &str)]) -> String {
    let operations: Vec<Value> = operations
        .iter()
        .map(
            |(name, body)| json!({"id": sha256(body), "name": name, "type": "query", "body": body}),
        )
        .collect();
    json!({"format": "apollo-persisted-query-manifest", "version": 1, "operations": operations})
        .to_string()
}

/// The report's line for the operation `name`.
fn line_of<'a>(checked: &'a Checked, name: &str) -> &'a str {
    checked
        .stdout
        .lines()
        .find(|line| line.contains(&format!(": {name} (")))
        .unwrap_or_else(|| panic!("{name} is not reported:\n{}", checked.stdout))
}

#[test]
fn the_checked_in_manifest_passes() {
    let manifest =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/persisted-query-manifest.json");
    let operations = serde_json::from_str::<Value>(&std::fs::read_to_string(&manifest).unwrap())
        .unwrap()["operations"]
        .as_array()
        .unwrap()
        .len();
    let checked = check_operations(&[&manifest]);
    assert_eq!(
        checked.status,
        Some(0),
        "{}{}",
        checked.stdout,
        checked.stderr
    );
    assert_eq!(
        checked.stdout,
        format!("{operations} operations checked in 1 manifest, 0 would break\n")
    );
}

#[test]
fn operations_that_would_break_are_listed_by_name_with_what_broke() {
    let dir = scratch("broken");
    let stale = "query StaleId { viewer { __typename } }";
    let mut manifest: Value = serde_json::from_str(&apollo_manifest(&[
        ("StillFine", "query StillFine { me { id name } }"),
        (
            "RemovedField",
            "query RemovedField {\n  order(id: \"ord-019801\") {\n    id\n    nickname\n  }\n}",
        ),
        ("MissingArgument", "mutation MissingArgument { cancelOrder { id } }"),
        (
            "WrongArgumentType",
            "query WrongArgumentType { customers(first: \"ten\") { nodes { id } } }",
        ),
        (
            "WrongVariableType",
            "query WrongVariableType($first: String!) { customers(first: $first) { nodes { id } } }",
        ),
        ("StaleId", stale),
    ]))
    .unwrap();
    // The app shipped the id of an earlier version of the document.
    manifest["operations"][5]["id"] = json!(sha256("query StaleId { viewer { id } }"));
    let path = write(&dir, "app-4.2.json", &manifest.to_string());

    let checked = check_operations(&[&path]);

    assert_eq!(
        checked.status,
        Some(1),
        "{}{}",
        checked.stdout,
        checked.stderr
    );
    assert!(!checked.stdout.contains("StillFine"), "{}", checked.stdout);
    let removed = line_of(&checked, "RemovedField");
    assert!(removed.starts_with(&format!("{}: RemovedField (", path.display())));
    assert!(
        removed.contains("4:5: Unknown field \"nickname\" on type \"Order\""),
        "{removed}"
    );
    let missing = line_of(&checked, "MissingArgument");
    assert!(missing.contains("\"id\""), "{missing}");
    assert!(missing.contains("required"), "{missing}");
    let wrong = line_of(&checked, "WrongArgumentType");
    assert!(wrong.contains("\"first\""), "{wrong}");
    assert!(wrong.contains("Int"), "{wrong}");
    let wrong_variable = line_of(&checked, "WrongVariableType");
    assert!(wrong_variable.contains("$first"), "{wrong_variable}");
    assert!(wrong_variable.contains("Int"), "{wrong_variable}");
    let stale_id = line_of(&checked, "StaleId");
    assert!(
        stale_id.contains(&format!(
            "({})",
            &manifest["operations"][5]["id"].as_str().unwrap()[..12]
        )),
        "{stale_id}"
    );
    assert!(
        stale_id.contains(&format!(
            "is not the SHA-256 of its body (that is {}",
            &sha256(stale)[..12]
        )),
        "{stale_id}"
    );
    assert!(
        checked
            .stdout
            .ends_with("\n6 operations checked in 1 manifest, 5 would break\n"),
        "{}",
        checked.stdout
    );
}

#[test]
fn a_hash_to_document_map_is_checked_beside_apollo_manifests() {
    let dir = scratch("map");
    let broken = "query OldHomeScreen { me { nickname } }";
    let fine = "query Profile { me { id email } }";
    let map = write(
        &dir,
        "relay.json",
        &json!({ sha256(broken): broken, sha256(fine): fine }).to_string(),
    );
    let apollo = write(
        &dir,
        "apollo.json",
        &apollo_manifest(&[("HomeScreen", "query HomeScreen { me { id } }")]),
    );

    let checked = check_operations(&[&map, &apollo]);

    assert_eq!(
        checked.status,
        Some(1),
        "{}{}",
        checked.stdout,
        checked.stderr
    );
    let old = line_of(&checked, "OldHomeScreen");
    assert!(old.starts_with(&format!("{}: OldHomeScreen (", map.display())));
    assert!(
        old.contains("Unknown field \"nickname\" on type \"Customer\""),
        "{old}"
    );
    assert!(!checked.stdout.contains("Profile"), "{}", checked.stdout);
    assert!(
        checked
            .stdout
            .ends_with("\n3 operations checked in 2 manifests, 1 would break\n"),
        "{}",
        checked.stdout
    );
}

#[test]
fn a_missing_file_or_one_that_is_not_a_manifest_is_unusable() {
    let dir = scratch("unusable");
    let good = write(
        &dir,
        "good.json",
        &apollo_manifest(&[("Me", "query Me { me { id } }")]),
    );
    let missing = dir.join("missing.json");
    let not_json = write(&dir, "notes.txt", "query Me { me { id } }");
    let not_a_manifest = write(
        &dir,
        "package.json",
        r#"{"name": "app", "version": "4.2.0"}"#,
    );
    let wrong_format = write(
        &dir,
        "other.json",
        r#"{"format": "something-else", "version": 1, "operations": []}"#,
    );
    for (path, why) in [
        (&missing, "cannot be read"),
        (&not_json, "not JSON"),
        (&not_a_manifest, "`name` is not a hash"),
        (&wrong_format, "something-else"),
    ] {
        let checked = check_operations(&[&good, path]);
        assert_eq!(
            checked.status,
            Some(2),
            "{}: {}",
            path.display(),
            checked.stderr
        );
        assert!(
            checked.stderr.contains(&path.display().to_string()),
            "{}",
            checked.stderr
        );
        assert!(
            checked.stderr.contains("is not a persisted query manifest") || why == "cannot be read",
            "{}",
            checked.stderr
        );
        assert!(checked.stderr.contains(why), "{}", checked.stderr);
        assert_eq!(checked.stdout, "", "nothing is checked");
    }
}
