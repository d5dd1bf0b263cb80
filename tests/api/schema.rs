//! `schema/schema.graphql` is the schema the code builds: this fails when it is stale.
//! Regenerate with `UPDATE_SCHEMA=1 cargo test --test api schema::` (or `switchyard schema`).

use std::path::PathBuf;

use serde_json::Value;

#[test]
fn checked_in_schema_matches_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/schema.graphql");
    let sdl = switchyard::app::schema_sdl();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &sdl).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == sdl,
        "schema/schema.graphql is stale: run `UPDATE_SCHEMA=1 cargo test --test api schema::` and commit it"
    );
}

#[test]
fn schema_is_a_federation_v2_subgraph_with_entities() {
    let sdl = switchyard::app::schema_sdl();
    assert!(sdl.contains("extend schema @link("), "{sdl}");
    assert!(
        sdl.contains("url: \"https://specs.apollo.dev/federation/v2."),
        "{sdl}"
    );
    for entity in ["Customer", "Order", "Product", "SupportCase"] {
        assert!(
            sdl.contains(&format!("type {entity} @key(fields: \"id\")")),
            "{entity} is not an entity keyed by id"
        );
    }
}

#[tokio::test]
async fn every_type_field_and_argument_has_a_description() {
    let schema = resolvers::schema_builder().finish();
    let query = r#"{ __schema { types { name kind description
        fields { name description args { name description } }
        inputFields { name description }
        enumValues { name description } } } }"#;
    let response = schema.execute(query).await;
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    let data = response.data.into_json().unwrap();
    // Built-in scalars, federation's types, and the relay connection types async-graphql
    // generates (it has no hook for their descriptions; their fields are documented).
    let builtin = |name: &str| {
        name.starts_with('_')
            || name.ends_with("Connection")
            || ["String", "Int", "Float", "Boolean", "ID", "DateTime"].contains(&name)
    };
    let missing = |v: &Value| {
        v["description"]
            .as_str()
            .is_none_or(|d| d.trim().is_empty())
    };
    let mut undocumented = Vec::new();
    for ty in data["__schema"]["types"].as_array().unwrap() {
        let name = ty["name"].as_str().unwrap();
        if builtin(name) {
            continue;
        }
        if missing(ty) {
            undocumented.push(name.to_owned());
        }
        for list in ["fields", "inputFields", "enumValues"] {
            for f in ty[list].as_array().into_iter().flatten() {
                let field = f["name"].as_str().unwrap();
                if field.starts_with('_') {
                    continue;
                }
                if missing(f) {
                    undocumented.push(format!("{name}.{field}"));
                }
                for arg in f["args"].as_array().into_iter().flatten() {
                    if missing(arg) {
                        undocumented.push(format!("{name}.{field}({})", arg["name"]));
                    }
                }
            }
        }
    }
    assert!(undocumented.is_empty(), "undocumented: {undocumented:#?}");
}

#[test]
fn checked_in_manifest_matches_the_operations() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/persisted-query-manifest.json");
    let manifest = switchyard::app::persisted_query_manifest();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &manifest).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == manifest,
        "schema/persisted-query-manifest.json is stale: run `UPDATE_SCHEMA=1 cargo test --test api schema::` and commit it"
    );
    let parsed: Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(parsed["format"], "apollo-persisted-query-manifest");
    let home = parsed["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["name"] == "HomeScreen")
        .expect("the home screen is a trusted document");
    assert_eq!(home["type"], "query");
    let place = parsed["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["name"] == "PlaceOrder")
        .unwrap();
    assert_eq!(place["type"], "mutation");
}
