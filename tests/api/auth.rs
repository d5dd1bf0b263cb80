//! Who is calling: bearer tokens against the identity provider, as a platform team would
//! check them (key rotation, exact issuers, discovery).

use std::time::Duration;

use crate::support::TestApp;
use crate::support::issuer::{Issuer, customer_claims};
use sandbox::SandboxConfig;
use serde_json::{Value, json};

const ADA: &str = "cust-0001";
/// Longest a request may take here before the test calls it hung.
const WAIT: Duration = Duration::from_secs(10);

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

/// A token whose key is cached is validated at once, even while another token's unknown key
/// id has a JWKS refresh waiting on a slow identity provider.
#[tokio::test]
async fn a_token_whose_key_is_cached_never_waits_for_a_refresh() {
    let mut issuer = Issuer::start().await;
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| {
        issuer.trust(c, 0);
        c.auth.jwks_refresh_secs = Some(0);
    })
    .await;
    let known = issuer.token(ADA, 300);
    let (status, _) = app.post(Some(&known), "{ me { id } }", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(issuer.jwks_fetches(), 1);

    // The provider rotates its key; the JWKS answer that brings the new one is held back.
    issuer.rotate("k2").await;
    issuer.hold_jwks().await;
    let rotated = issuer.sign_with("k2", customer_claims(ADA));
    let waiting = {
        let http = app.http.clone();
        let url = app.url("/graphql");
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(rotated)
                .json(&json!({"query": "{ me { id } }"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tokio::time::timeout(WAIT, issuer.jwks_request_arrived())
        .await
        .expect("the new key id asks the provider");

    // Meanwhile a token of the cached key is answered.
    let answered = tokio::time::timeout(WAIT, app.post(Some(&known), "{ me { id } }", json!({})))
        .await
        .expect("a cached key does not wait for the refresh");
    assert_eq!(answered.0, 200);
    assert_eq!(answered.1["data"]["me"]["id"], ADA);

    issuer.release().await;
    assert_eq!(
        waiting.await.unwrap(),
        200,
        "the rotated key validates once fetched"
    );
    assert_eq!(issuer.jwks_fetches(), 2);
    app.stop().await;
}

/// A token that verified is remembered (the signature check is most of what a request's
/// authentication costs), but never past its expiry: the same token is refused once `exp`
/// (plus the leeway) has passed, as the full check would.
#[tokio::test]
async fn a_remembered_token_still_expires() {
    let issuer = Issuer::start().await;
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| issuer.trust(c, 0)).await;
    let token = issuer.token(ADA, 2);
    let (status, body) = app.post(Some(&token), "{ me { id } }", json!({})).await;
    assert_eq!((status, &body["data"]["me"]["id"]), (200, &json!(ADA)));
    let (status, _) = app.post(Some(&token), "{ me { id } }", json!({})).await;
    assert_eq!(status, 200, "still valid a moment later");

    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let (status, body) = app.post(Some(&token), "{ me { id } }", json!({})).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("expired"),
        "{body}"
    );
    app.stop().await;
}

/// A token remembered as verified is checked again once the provider's keys changed: after
/// a refresh that no longer lists its key, it is refused.
#[tokio::test]
async fn a_remembered_token_of_a_retired_key_is_refused_after_a_refresh() {
    let mut issuer = Issuer::start().await;
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| {
        issuer.trust(c, 0);
        c.auth.jwks_refresh_secs = Some(0);
    })
    .await;
    let old = issuer.token(ADA, 300);
    let (status, _) = app.post(Some(&old), "{ me { id } }", json!({})).await;
    assert_eq!(status, 200);

    // The provider replaces k1 by k2; a token signed with k2 makes Switchyard refresh.
    issuer.rotate("k2").await;
    issuer.retire("k1").await;
    let new = issuer.sign_with("k2", customer_claims(ADA));
    let (status, _) = app.post(Some(&new), "{ me { id } }", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(issuer.jwks_fetches(), 2);

    let (status, body) = app.post(Some(&old), "{ me { id } }", json!({})).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("unknown signing key k1"),
        "{body}"
    );
    app.stop().await;
}

/// `auth.issuer` is compared exactly with `iss`: providers whose issuer ends in `/` (Auth0,
/// Azure AD v1) work when configured so, and a slash more or less is another issuer.
#[tokio::test]
async fn the_issuer_is_compared_exactly() {
    let issuer = Issuer::start().await;
    let with_slash = format!("{}/", issuer.base);
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| {
        issuer.trust(c, 0);
        c.auth.issuer = Some(with_slash.clone());
        c.auth.jwks_url = Some(issuer.jwks_url());
    })
    .await;
    let mut claims = customer_claims(ADA);
    claims["iss"] = json!(with_slash);
    let (status, body) = app
        .post(Some(&issuer.sign(claims)), "{ me { id } }", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["me"]["id"], ADA);

    let without_slash = issuer.sign(customer_claims(ADA));
    let (status, body) = app
        .post(Some(&without_slash), "{ me { id } }", json!({}))
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(code(&body), "UNAUTHENTICATED");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("another issuer"),
        "{body}"
    );
    app.stop().await;
}

/// The discovery document must name the issuer it was fetched for (OIDC Discovery 4.3);
/// otherwise no key is taken from it.
#[tokio::test]
async fn a_discovery_document_for_another_issuer_is_not_trusted() {
    let issuer = Issuer::start().await;
    issuer.discovery_names("https://evil.example.com").await;
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| issuer.trust(c, 0)).await;
    let (status, body) = app
        .post(Some(&issuer.token(ADA, 300)), "{ me { id } }", json!({}))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(code(&body), "AUTH_UNAVAILABLE");
    assert_eq!(
        issuer.jwks_fetches(),
        0,
        "no key is fetched from a document for another issuer"
    );
    app.stop().await;
}

/// Tokens naming key ids the provider never published cost it at most one JWKS fetch per
/// `auth.jwks_refresh_secs`, however many arrive.
#[tokio::test]
async fn forged_key_ids_do_not_hammer_the_provider() {
    let mut issuer = Issuer::start().await;
    issuer.forge_key("forged");
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| issuer.trust(c, 0)).await;
    let (status, _) = app
        .post(Some(&issuer.token(ADA, 300)), "{ me { id } }", json!({}))
        .await;
    assert_eq!(status, 200);
    let forged = issuer.sign_with("forged", customer_claims(ADA));
    let answers = futures::future::join_all(
        (0..20).map(|_| app.post(Some(&forged), "{ me { id } }", json!({}))),
    )
    .await;
    for (status, body) in answers {
        assert_eq!(status, 401, "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("unknown signing key")
        );
    }
    assert_eq!(issuer.jwks_fetches(), 1);
    app.stop().await;
}

/// A provider that is down is asked at most once a second for its keys, not once per request:
/// every request meanwhile is answered 503 at once.
#[tokio::test]
async fn a_provider_that_is_down_is_not_asked_once_per_request() {
    let issuer = Issuer::start().await;
    issuer.fail_jwks(true);
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| issuer.trust(c, 0)).await;
    let token = issuer.token(ADA, 300);
    let answers = futures::future::join_all(
        (0..20).map(|_| app.post(Some(&token), "{ me { id } }", json!({}))),
    )
    .await;
    for (status, body) in answers {
        assert_eq!(status, 503, "{body}");
        assert_eq!(code(&body), "AUTH_UNAVAILABLE");
    }
    // One fetch a second at most: one here, two if the 20 requests straddled a second.
    assert!(
        issuer.jwks_fetches() <= 2,
        "{} fetches",
        issuer.jwks_fetches()
    );
    app.stop().await;
}

/// Claims that do not say clearly who is calling are refused, not guessed at.
#[tokio::test]
async fn tokens_with_odd_claims_are_refused() {
    let issuer = Issuer::start().await;
    let app = TestApp::spawn_with(SandboxConfig::default(), |c| issuer.trust(c, 0)).await;
    let odd = |claim: &str, value: Value| {
        let mut claims = customer_claims(ADA);
        claims[claim] = value;
        issuer.sign(claims)
    };
    for (token, why) in [
        (odd("sub", json!("")), "an empty sub"),
        (
            odd("customer_id", json!(1)),
            "a customer id that is not a string",
        ),
        (
            odd("customer_id", json!("cust-0002; drop")),
            "a customer id that is not one",
        ),
        (
            odd("roles", json!({"customer": true})),
            "roles that are not a list",
        ),
        (odd("exp", json!(u64::MAX)), "an expiry past any clock"),
        (
            odd("nbf", json!(chrono::Utc::now().timestamp() + 3600)),
            "not valid yet",
        ),
    ] {
        let (status, body) = app.post(Some(&token), "{ me { id } }", json!({})).await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_eq!(code(&body), "UNAUTHENTICATED", "{why}");
    }
    app.stop().await;
}
