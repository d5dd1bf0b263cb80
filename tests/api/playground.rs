//! The playground in headless Chromium, as an app developer uses it: load it (offline, no
//! other host contacted), sign in as the demo customer, run the home screen query, read the
//! result; watch a subscription and a live query change when an order is placed.

use std::time::Duration;

use crate::support::TestApp;
use crate::support::browser::{Browser, Page};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_and_run_the_home_screen_in_the_playground() {
    let app = TestApp::spawn().await;
    let browser = Browser::launch().await.expect("chromium starts");
    let page = browser.new_page(&app.url("/playground/")).await.unwrap();

    // The example operations are there as tabs, the home screen first.
    page.wait_for("window.__switchyardPlayground?.ready?.() === true", WAIT)
        .await
        .unwrap();
    let tabs = page
        .eval("window.__switchyardPlayground.tabs()")
        .await
        .unwrap();
    assert_eq!(tabs[0], "HomeScreen", "{tabs}");
    for name in [
        "PlaceOrder",
        "OpenSupportCase",
        "RequestReturn",
        "CompleteTask",
        "AgentCustomerView",
        "Sync",
    ] {
        assert!(
            tabs.as_array().unwrap().iter().any(|t| t == name),
            "no tab {name}: {tabs}"
        );
    }

    // Sign in as Ada with the demo sign-in, like a person would.
    page.wait_for("document.querySelector('#sign-in') !== null", WAIT)
        .await
        .unwrap();
    page.eval(
        "(() => { const s = document.querySelector('#demo-user'); s.value = 'cust-0001'; \
         s.dispatchEvent(new Event('change', { bubbles: true })); \
         document.querySelector('#sign-in').click(); })()",
    )
    .await
    .unwrap();
    page.wait_for(
        "document.querySelector('#signed-in-as')?.textContent.includes('Ada Lovelace')",
        WAIT,
    )
    .await
    .unwrap();
    let headers = page
        .eval("window.__switchyardPlayground.headers()")
        .await
        .unwrap();
    assert!(headers.to_string().contains("Bearer "), "{headers}");

    // Run the home screen with the execute button, right after selecting its tab (which
    // reloads the tab's stored headers: the sign-in must have stored the bearer there too).
    page.eval("document.querySelector('.graphiql-tab-button[title=\"HomeScreen\"]').click()")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    page.eval("document.querySelector('.graphiql-execute-button').click()")
        .await
        .unwrap();
    page.wait_for(
        "(window.__switchyardPlayground.response() || '').includes('\"me\"')",
        WAIT,
    )
    .await
    .unwrap();
    let text = page
        .eval("window.__switchyardPlayground.response()")
        .await
        .unwrap();
    let result: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
    assert!(result.get("errors").is_none(), "{result:#}");
    assert_eq!(result["data"]["me"]["name"], "Ada Lovelace");
    assert_eq!(
        result["data"]["me"]["orders"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    // A live subscription: run the notifications tab, then change something upstream.
    run_tab(&page, "LiveNotifications").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ada = app.token("cust-0001").await;
    let order = place_order(&app, &ada, "prod-0002").await;
    let text = shown(&page, &order).await;
    assert!(text.contains("ORDER_UPDATED"), "{text}");

    // A live query: the home screen changes by itself when an order is placed.
    run_tab(&page, "LiveHomeScreen").await;
    shown(&page, &order).await;
    let newer = place_order(&app, &ada, "prod-0003").await;
    shown(&page, &newer).await;

    let shot = std::env::temp_dir().join("switchyard-playground.png");
    page.screenshot(&shot).await.unwrap();
    assert_eq!(
        page.foreign_requests(),
        Vec::<String>::new(),
        "the playground must work offline"
    );
    assert_eq!(page.console_errors(), Vec::<String>::new());
    drop(browser);
    app.stop().await;
}

/// Selects the tab of the example operation `name` and runs it with the execute button.
async fn run_tab(page: &Page, name: &str) {
    page.eval(&format!(
        "window.__switchyardPlayground.selectTab('{name}')"
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    page.eval("document.querySelector('.graphiql-execute-button').click()")
        .await
        .unwrap();
}

/// The response pane's text, once it shows `text`.
async fn shown(page: &Page, text: &str) -> String {
    let pane = "(window.__switchyardPlayground.response() || '')";
    page.wait_for(&format!("{pane}.includes('{text}')"), WAIT)
        .await
        .unwrap();
    let value = page.eval(pane).await.unwrap();
    value.as_str().unwrap().to_owned()
}

/// Places an order of one `product` for the token's customer, over HTTP: its id.
async fn place_order(app: &TestApp, token: &str, product: &str) -> String {
    let placed = app
        .data(
            token,
            &format!(
                "mutation {{ placeOrder(input: {{ lines: [{{ productId: \"{product}\", quantity: 1 }}] }}) {{ id }} }}"
            ),
            serde_json::json!({}),
        )
        .await;
    placed["placeOrder"]["id"].as_str().unwrap().to_owned()
}
