//! The embedded sandbox: everything of the server that exists only for it (the `sandbox`
//! feature, on by default).
//!
//! With no upstream configured, [`crate::run`] comes here: it starts the sandbox (the `sandbox`
//! crate) in this process, has it post its webhooks to this Switchyard with secrets both sides
//! know ([`connect_sandbox_webhooks`]), points the upstreams and the token issuer at it
//! ([`sandbox_wiring`]) and every push channel not configured otherwise at its push providers
//! ([`sandbox_push_wiring`]), and serves with the demo sign-in (`GET /dev/users`, `POST
//! /dev/token`, see [`DevSignIn`]) that the playground uses.
//!
//! Nothing in a config file or the environment turns the demo sign-in on: only a Switchyard
//! that runs a sandbox itself serves it. `switchyard sandbox` runs the sandbox alone and prints
//! [`sandbox_summary`], the config replicas need to use it like real systems: their tokens come
//! from the (sandbox's) identity provider, as in production.

mod dev_sign_in;

use std::net::{IpAddr, SocketAddr};

use anyhow::Context as _;
use sandbox::{PushCredentials, Sandbox, SandboxConfig, SandboxUrls, SandboxWebhooks};
use serde::Serialize;
use url::Url;

use crate::config::{
    ApnsConfig, AuthConfig, BackendConfig, CallPolicy, CarrierConfig, ChannelPolicy, Config,
    CrmConfig, EmailConfig, EmailTls, FcmConfig, ProcessConfig, PushConfig, Secret,
    UpstreamsConfig, WebPushConfig, WebhooksConfig,
};

/// The VAPID subject (`sub`) of the embedded sandbox's Switchyard.
const SANDBOX_VAPID_SUBJECT: &str = "mailto:push@switchyard.example";
/// The `From` of the e-mails the embedded sandbox's Switchyard sends.
const SANDBOX_EMAIL_FROM: &str = "Switchyard <notifications@switchyard.example>";

pub use dev_sign_in::DevSignIn;

/// What [`crate::run`] does first when no upstream is configured: starts the sandbox and
/// wires `config` to it (upstreams, token issuer, webhook secrets), exactly as an operator
/// would write it for real systems. The caller serves with [`DevSignIn::of`] the sandbox, then
/// stops it.
pub(crate) async fn start(config: &mut Config, addr: SocketAddr) -> anyhow::Result<Sandbox> {
    let mut sandbox_config = config.sandbox.clone();
    connect_sandbox_webhooks(&mut sandbox_config, &mut config.webhooks, addr);
    let sandbox = Sandbox::start(sandbox_config)
        .await
        .context("starting the embedded sandbox")?;
    let (upstreams, auth) = sandbox_wiring(&sandbox)?;
    config.upstreams = upstreams;
    config.auth = AuthConfig {
        issuer: auth.issuer,
        audience: config.auth.audience.clone().or(auth.audience),
        ..config.auth.clone()
    };
    // A channel configured for real (a phone on real FCM, say) stays as it is.
    let push = sandbox_push_wiring(&sandbox)?;
    config.push.fcm = config.push.fcm.take().or(push.fcm);
    config.push.apns = config.push.apns.take().or(push.apns);
    config.push.webpush = config.push.webpush.take().or(push.webpush);
    config.push.email = config.push.email.take().or(push.email);
    tracing::info!(
        backend = %sandbox.urls().backend,
        crm = %sandbox.urls().crm,
        process = %sandbox.urls().process,
        carrier = %sandbox.urls().carrier,
        oidc = %sandbox.urls().oidc,
        pushes = %format!("{}/_sandbox/push", sandbox.urls().fcm),
        "embedded sandbox started"
    );
    Ok(sandbox)
}

/// Points a sandbox's webhooks at the Switchyard listening on `addr` (unless the sandbox
/// config names a target already), and has Switchyard verify them with the secrets the
/// sandbox signs with (unless configured).
pub fn connect_sandbox_webhooks(
    sandbox: &mut SandboxConfig,
    webhooks: &mut WebhooksConfig,
    addr: SocketAddr,
) {
    let hooks = sandbox.webhooks.get_or_insert_with(|| {
        let host = if addr.ip().is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            addr.ip()
        };
        SandboxWebhooks::dev(format!(
            "http://{}/webhooks",
            SocketAddr::new(host, addr.port())
        ))
    });
    let secret = |s: &String| Secret::new(s.clone());
    webhooks
        .backend_secret
        .get_or_insert_with(|| secret(&hooks.backend_secret));
    webhooks
        .crm_secret
        .get_or_insert_with(|| secret(&hooks.crm_secret));
    webhooks
        .process_secret
        .get_or_insert_with(|| secret(&hooks.process_secret));
    webhooks
        .carrier_secret
        .get_or_insert_with(|| secret(&hooks.carrier_secret));
}

/// The upstream and auth config that points at a running sandbox, exactly as an operator
/// would write it for real systems.
pub fn sandbox_wiring(sandbox: &Sandbox) -> anyhow::Result<(UpstreamsConfig, AuthConfig)> {
    wiring(sandbox.urls(), sandbox.config())
}

fn wiring(
    urls: &SandboxUrls,
    creds: &SandboxConfig,
) -> anyhow::Result<(UpstreamsConfig, AuthConfig)> {
    let url = |u: &dyn std::fmt::Display| -> anyhow::Result<Url> {
        Url::parse(&u.to_string()).context("sandbox URL")
    };
    let upstreams = UpstreamsConfig {
        backend: Some(BackendConfig {
            url: url(&urls.backend)?,
            token: Secret::new(creds.backend_token.clone()),
            policy: CallPolicy::default(),
        }),
        crm: Some(CrmConfig {
            login_url: url(&urls.crm)?,
            client_id: creds.crm_client_id.clone(),
            client_secret: Secret::new(creds.crm_client_secret.clone()),
            api_version: "v60.0".to_owned(),
            policy: CallPolicy::default(),
        }),
        process: Some(ProcessConfig {
            url: url(&urls.process)?,
            user: creds.kie_user.clone(),
            password: Secret::new(creds.kie_password.clone()),
            container: "returns".to_owned(),
            return_process: "returns.ReturnRequest".to_owned(),
            policy: CallPolicy::default(),
        }),
        carrier: Some(CarrierConfig {
            url: url(&urls.carrier)?,
            api_key: Secret::new(creds.carrier_api_key.clone()),
            max_retry_after_secs: 2,
            policy: CallPolicy {
                concurrency: 8,
                ..CallPolicy::default()
            },
        }),
    };
    let auth = AuthConfig {
        // Exactly the `iss` the sandbox's issuer writes.
        issuer: Some(urls.oidc.clone()),
        audience: Some(creds.oidc_audience.clone()),
        ..AuthConfig::default()
    };
    Ok((upstreams, auth))
}

/// The `[push]` config that points every channel at a running sandbox's push providers, with
/// the credentials it generated (files in its temporary directory), as an operator would
/// write it for the real providers.
pub fn sandbox_push_wiring(sandbox: &Sandbox) -> anyhow::Result<PushConfig> {
    push_wiring(sandbox.urls(), sandbox.push().credentials())
}

fn push_wiring(urls: &SandboxUrls, push: &PushCredentials) -> anyhow::Result<PushConfig> {
    let url = |u: &str| Url::parse(u).context("sandbox URL");
    let smtp = url(&urls.smtp)?;
    Ok(PushConfig {
        fcm: Some(FcmConfig {
            service_account_file: push.fcm_service_account_file.clone(),
            base_url: url(&urls.fcm)?,
            policy: ChannelPolicy::default(),
        }),
        apns: Some(ApnsConfig {
            team_id: push.apns_team_id.clone(),
            key_id: push.apns_key_id.clone(),
            key_file: push.apns_key_file.clone(),
            production_url: url(&urls.apns)?,
            development_url: url(&urls.apns_development)?,
            ca_file: Some(push.apns_ca_file.clone()),
            policy: ChannelPolicy::default(),
        }),
        webpush: Some(WebPushConfig {
            vapid_private_key: Some(Secret::new(sandbox::DEV_VAPID_PRIVATE_KEY)),
            vapid_private_key_file: None,
            subject: SANDBOX_VAPID_SUBJECT.to_owned(),
            // The sandbox's push service speaks plain HTTP.
            allow_http: true,
            policy: ChannelPolicy::default(),
        }),
        email: Some(EmailConfig {
            host: smtp
                .host_str()
                .context("the sandbox's SMTP URL has no host")?
                .to_owned(),
            port: smtp.port(),
            tls: EmailTls::None,
            username: None,
            password: None,
            from: SANDBOX_EMAIL_FROM.to_owned(),
            helo_name: None,
            ca_file: None,
            policy: ChannelPolicy::default(),
        }),
    })
}

/// What `switchyard sandbox` prints: a header of comments (dev credentials, how to get a
/// token, where the webhooks go), then the config a replica needs to use the sandbox, as TOML.
/// It holds what [`sandbox_wiring`] and [`sandbox_push_wiring`] set, and no demo sign-in:
/// replicas get their tokens from the sandbox's issuer, the way a real deployment gets them
/// from its identity provider.
pub fn sandbox_summary(sandbox: &Sandbox) -> anyhow::Result<String> {
    summary(
        sandbox.urls(),
        sandbox.config(),
        sandbox.push().credentials(),
    )
}

fn summary(
    urls: &SandboxUrls,
    creds: &SandboxConfig,
    push_credentials: &PushCredentials,
) -> anyhow::Result<String> {
    let (upstreams, auth) = wiring(urls, creds)?;
    let push = push_wiring(urls, push_credentials)?;
    let (Some(fcm), Some(apns), Some(webpush), Some(email)) =
        (&push.fcm, &push.apns, &push.webpush, &push.email)
    else {
        anyhow::bail!("sandbox push wiring is incomplete");
    };
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let (Some(backend), Some(crm), Some(process), Some(carrier)) = (
        &upstreams.backend,
        &upstreams.crm,
        &upstreams.process,
        &upstreams.carrier,
    ) else {
        anyhow::bail!("sandbox wiring is incomplete");
    };
    let printed = PrintedConfig {
        auth: PrintedAuth {
            issuer: auth.issuer.as_deref().unwrap_or_default(),
            audience: auth.audience.as_deref().unwrap_or_default(),
        },
        upstreams: PrintedUpstreams {
            backend: PrintedBackend {
                url: backend.url.as_str(),
                token: backend.token.expose(),
            },
            crm: PrintedCrm {
                login_url: crm.login_url.as_str(),
                client_id: &crm.client_id,
                client_secret: crm.client_secret.expose(),
                api_version: &crm.api_version,
            },
            process: PrintedProcess {
                url: process.url.as_str(),
                user: &process.user,
                password: process.password.expose(),
                container: &process.container,
                return_process: &process.return_process,
            },
            carrier: PrintedCarrier {
                url: carrier.url.as_str(),
                api_key: carrier.api_key.expose(),
            },
        },
        webhooks: creds.webhooks.as_ref().map(|hooks| PrintedWebhooks {
            backend_secret: &hooks.backend_secret,
            crm_secret: &hooks.crm_secret,
            process_secret: &hooks.process_secret,
            carrier_secret: &hooks.carrier_secret,
        }),
        push: PrintedPush {
            fcm: PrintedFcm {
                service_account_file: path(&fcm.service_account_file),
                base_url: fcm.base_url.as_str(),
            },
            apns: PrintedApns {
                team_id: &apns.team_id,
                key_id: &apns.key_id,
                key_file: path(&apns.key_file),
                production_url: apns.production_url.as_str(),
                development_url: apns.development_url.as_str(),
                ca_file: apns.ca_file.as_deref().map(path).unwrap_or_default(),
            },
            webpush: PrintedWebPush {
                vapid_private_key: webpush
                    .vapid_private_key
                    .as_ref()
                    .map(Secret::expose)
                    .unwrap_or_default(),
                subject: &webpush.subject,
                allow_http: webpush.allow_http,
            },
            email: PrintedEmail {
                host: &email.host,
                port: email.port.unwrap_or(25),
                tls: "none",
                from: &email.from,
            },
        },
    };
    let body = toml::to_string(&printed).context("writing the sandbox's config as TOML")?;

    let issuer = comment_text(printed.auth.issuer.trim_end_matches('/'));
    let mut header = format!(
        "# Switchyard sandbox upstreams are running. Point replicas at them with this config\n\
         # (or the matching SWITCHYARD_* variables); these are dev credentials.\n\
         #\n\
         # This config has no demo sign-in. Replicas take tokens from the sandbox's OIDC issuer,\n\
         # as a real deployment takes them from its identity provider. A token for cust-0001\n\
         # (or any seeded customer, agent-01, agent-02):\n\
         #   curl -s -XPOST {issuer}/token -H 'content-type: application/json' \\\n\
         #     -d '{{\"user\":\"cust-0001\"}}' | jq -r .access_token\n\
         # The demo users: curl -s {issuer}/users\n\
         #\n"
    );
    match &creds.webhooks {
        Some(hooks) => header.push_str(&format!(
            "# The sandbox posts its webhooks to {}/<source>, signed with the\n\
             # [webhooks] secrets below.\n",
            comment_text(hooks.url.trim_end_matches('/'))
        )),
        None => header
            .push_str("# No webhooks are posted: set sandbox.webhooks.url to have live updates.\n"),
    }
    header.push_str(&format!(
        "#\n\
         # [push.*] points at the sandbox's push providers, with credentials it generated in a\n\
         # temporary directory that lives as long as it runs. What they received:\n\
         #   curl -s {}/_sandbox/push\n\
         # A Web Push subscription, as a browser makes one: curl -s -XPOST {}/subscriptions\n",
        comment_text(&urls.fcm),
        comment_text(&urls.webpush),
    ));
    Ok(format!("{header}\n{body}"))
}

/// `text` fit for a TOML comment: control characters (a line break would end the comment)
/// become `?`.
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The config `switchyard sandbox` prints; the keys are [`Config`]'s.
#[derive(Serialize)]
struct PrintedConfig<'a> {
    auth: PrintedAuth<'a>,
    upstreams: PrintedUpstreams<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhooks: Option<PrintedWebhooks<'a>>,
    push: PrintedPush<'a>,
}

/// `[auth]`.
#[derive(Serialize)]
struct PrintedAuth<'a> {
    issuer: &'a str,
    audience: &'a str,
}

/// `[upstreams.*]`.
#[derive(Serialize)]
struct PrintedUpstreams<'a> {
    backend: PrintedBackend<'a>,
    crm: PrintedCrm<'a>,
    process: PrintedProcess<'a>,
    carrier: PrintedCarrier<'a>,
}

/// `[upstreams.backend]`.
#[derive(Serialize)]
struct PrintedBackend<'a> {
    url: &'a str,
    token: &'a str,
}

/// `[upstreams.crm]`.
#[derive(Serialize)]
struct PrintedCrm<'a> {
    login_url: &'a str,
    client_id: &'a str,
    client_secret: &'a str,
    api_version: &'a str,
}

/// `[upstreams.process]`.
#[derive(Serialize)]
struct PrintedProcess<'a> {
    url: &'a str,
    user: &'a str,
    password: &'a str,
    container: &'a str,
    return_process: &'a str,
}

/// `[upstreams.carrier]`.
#[derive(Serialize)]
struct PrintedCarrier<'a> {
    url: &'a str,
    api_key: &'a str,
}

/// `[push.*]`: the sandbox's push providers.
#[derive(Serialize)]
struct PrintedPush<'a> {
    fcm: PrintedFcm<'a>,
    apns: PrintedApns<'a>,
    webpush: PrintedWebPush<'a>,
    email: PrintedEmail<'a>,
}

/// `[push.fcm]`.
#[derive(Serialize)]
struct PrintedFcm<'a> {
    service_account_file: String,
    base_url: &'a str,
}

/// `[push.apns]`.
#[derive(Serialize)]
struct PrintedApns<'a> {
    team_id: &'a str,
    key_id: &'a str,
    key_file: String,
    production_url: &'a str,
    development_url: &'a str,
    ca_file: String,
}

/// `[push.webpush]`.
#[derive(Serialize)]
struct PrintedWebPush<'a> {
    vapid_private_key: &'a str,
    subject: &'a str,
    allow_http: bool,
}

/// `[push.email]`.
#[derive(Serialize)]
struct PrintedEmail<'a> {
    host: &'a str,
    port: u16,
    tls: &'static str,
    from: &'a str,
}

/// `[webhooks]`: the secrets the sandbox signs with.
#[derive(Serialize)]
struct PrintedWebhooks<'a> {
    backend_secret: &'a str,
    crm_secret: &'a str,
    process_secret: &'a str,
    carrier_secret: &'a str,
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::*;

    fn urls() -> SandboxUrls {
        SandboxUrls {
            backend: "http://127.0.0.1:41001".into(),
            crm: "http://127.0.0.1:41002".into(),
            process: "http://127.0.0.1:41003/kie-server/services/rest/server".into(),
            carrier: "http://127.0.0.1:41004".into(),
            oidc: "http://127.0.0.1:41005".into(),
            fcm: "http://127.0.0.1:41006".into(),
            apns: "https://127.0.0.1:41007".into(),
            apns_development: "https://127.0.0.1:41008".into(),
            webpush: "http://127.0.0.1:41009".into(),
            smtp: "smtp://127.0.0.1:41010".into(),
        }
    }

    fn push_credentials() -> PushCredentials {
        PushCredentials {
            fcm_service_account_file: "/tmp/switchyard-sandbox-push-x/fcm-service-account.json"
                .into(),
            fcm_project_id: "switchyard-sandbox".into(),
            apns_key_file: "/tmp/switchyard-sandbox-push-x/AuthKey_ABC.p8".into(),
            apns_key_id: "ABC".into(),
            apns_team_id: "SBXTEAM001".into(),
            apns_ca_file: "/tmp/switchyard-sandbox-push-x/apns-ca.pem".into(),
        }
    }

    /// Credentials a hand-written TOML string would break on.
    fn awkward_credentials() -> SandboxConfig {
        let mut hooks = SandboxWebhooks::dev("http://127.0.0.1:4001/webhooks");
        hooks.backend_secret = r#"quote " and backslash \"#.into();
        hooks.crm_secret = "line\nbreak".into();
        hooks.process_secret = "tab\tand 'single' quotes".into();
        hooks.carrier_secret = "#not-a-comment = [x]".into();
        SandboxConfig {
            backend_token: r#"tok"en\"#.into(),
            crm_client_id: "client \"id\"".into(),
            crm_client_secret: "se\ncret".into(),
            kie_user: "kie\\user".into(),
            kie_password: "kieserver1!\"".into(),
            carrier_api_key: "key = \"value\"".into(),
            oidc_audience: "aud\"ience".into(),
            webhooks: Some(hooks),
            ..SandboxConfig::default()
        }
    }

    /// Reads TOML the way `Config::load` reads the file.
    fn parse(text: &str) -> Config {
        let config: Config = Figment::from(Toml::string(text))
            .extract()
            .unwrap_or_else(|e| panic!("the printed config does not load: {e}\n{text}"));
        config.validate().expect("the printed config is valid");
        config
    }

    #[test]
    fn the_printed_config_loads_back_into_the_wiring_the_embedded_sandbox_uses() {
        let creds = awkward_credentials();
        // The replicas recipe (README, "Several replicas") appends [events] and starts
        // replicas with --config.
        let text = summary(&urls(), &creds, &push_credentials()).unwrap()
            + "[events]\nredis_url = \"redis://127.0.0.1:6379/0\"\nstream_key = \"demo:events\"\n";
        let config = parse(&text);

        let (upstreams, auth) = wiring(&urls(), &creds).unwrap();
        assert_eq!(config.auth.issuer, auth.issuer);
        assert_eq!(config.auth.audience.as_deref(), Some(r#"aud"ience"#));
        let (backend, expected) = (
            config.upstreams.backend.unwrap(),
            upstreams.backend.unwrap(),
        );
        assert_eq!(backend.url, expected.url);
        assert_eq!(backend.token.expose(), r#"tok"en\"#);
        let (crm, expected) = (config.upstreams.crm.unwrap(), upstreams.crm.unwrap());
        assert_eq!(crm.login_url, expected.login_url);
        assert_eq!(crm.client_id, "client \"id\"");
        assert_eq!(crm.client_secret.expose(), "se\ncret");
        assert_eq!(crm.api_version, expected.api_version);
        let (process, expected) = (
            config.upstreams.process.unwrap(),
            upstreams.process.unwrap(),
        );
        assert_eq!(process.url, expected.url);
        assert_eq!(process.user, "kie\\user");
        assert_eq!(process.password.expose(), "kieserver1!\"");
        assert_eq!(process.container, expected.container);
        assert_eq!(process.return_process, expected.return_process);
        let (carrier, expected) = (
            config.upstreams.carrier.unwrap(),
            upstreams.carrier.unwrap(),
        );
        assert_eq!(carrier.url, expected.url);
        assert_eq!(carrier.api_key.expose(), "key = \"value\"");

        let hooks = creds.webhooks.as_ref().unwrap();
        let secret = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_owned());
        assert_eq!(
            [
                secret(&config.webhooks.backend_secret),
                secret(&config.webhooks.crm_secret),
                secret(&config.webhooks.process_secret),
                secret(&config.webhooks.carrier_secret),
            ],
            [
                Some(hooks.backend_secret.clone()),
                Some(hooks.crm_secret.clone()),
                Some(hooks.process_secret.clone()),
                Some(hooks.carrier_secret.clone()),
            ]
        );
        assert_eq!(
            config.events.redis_url.map(|u| u.expose().to_owned()),
            Some("redis://127.0.0.1:6379/0".to_owned())
        );
        assert_eq!(config.events.stream_key, "demo:events");

        let push = push_wiring(&urls(), &push_credentials()).unwrap();
        let (fcm, expected) = (config.push.fcm.unwrap(), push.fcm.unwrap());
        assert_eq!(fcm.service_account_file, expected.service_account_file);
        assert_eq!(fcm.base_url, expected.base_url);
        let (apns, expected) = (config.push.apns.unwrap(), push.apns.unwrap());
        assert_eq!(
            (&apns.team_id, &apns.key_id, &apns.key_file, &apns.ca_file),
            (
                &expected.team_id,
                &expected.key_id,
                &expected.key_file,
                &expected.ca_file
            )
        );
        assert_eq!(apns.production_url, expected.production_url);
        assert_eq!(apns.development_url, expected.development_url);
        let (webpush, expected) = (config.push.webpush.unwrap(), push.webpush.unwrap());
        assert_eq!(webpush.vapid_private_key, expected.vapid_private_key);
        assert_eq!(webpush.subject, expected.subject);
        assert!(webpush.allow_http);
        let (email, expected) = (config.push.email.unwrap(), push.email.unwrap());
        assert_eq!((&email.host, email.port), (&expected.host, Some(41010)));
        assert_eq!(email.tls, EmailTls::None);
        assert_eq!(email.from, expected.from);
    }

    #[test]
    fn the_printed_config_has_no_demo_sign_in() {
        let text = summary(&urls(), &SandboxConfig::default(), &push_credentials()).unwrap();
        parse(&text);
        assert!(!text.contains("dev_issuer"), "{text}");
        assert!(!text.contains("/dev/"), "{text}");
        // It says where tokens come from instead.
        assert!(
            text.contains("curl -s -XPOST http://127.0.0.1:41005/token"),
            "{text}"
        );
    }

    #[test]
    fn without_webhooks_the_printed_config_has_no_secrets_to_verify_them() {
        let text = summary(&urls(), &SandboxConfig::default(), &push_credentials()).unwrap();
        let config = parse(&text);
        assert!(config.webhooks.backend_secret.is_none(), "{text}");
        assert!(!text.contains("[webhooks]"), "{text}");
        assert!(text.contains("# No webhooks are posted"), "{text}");
    }

    #[test]
    fn a_webhook_url_cannot_break_out_of_its_comment() {
        let mut creds = SandboxConfig::default();
        let mut hooks = SandboxWebhooks::dev("http://127.0.0.1:4001/web\nhooks");
        hooks
            .url
            .push_str("\n[auth]\nissuer = \"https://evil.example\"");
        creds.webhooks = Some(hooks);
        let text = summary(&urls(), &creds, &push_credentials()).unwrap();
        let config = parse(&text);
        assert_eq!(
            config.auth.issuer.as_deref(),
            Some("http://127.0.0.1:41005"),
            "the issuer exactly as the sandbox's tokens name it"
        );
    }
}
