//! E-mail over SMTP, with lettre on tokio: STARTTLS (required, port 587 by default), implicit
//! TLS (465) or none (a local relay, tests); rustls with aws-lc-rs (lettre's `aws-lc-rs`
//! feature; its `rustls-tls` feature would bring ring) and the platform's roots, plus an extra
//! CA when configured; a pool of at most `policy.concurrency` connections.
//!
//! A message is `multipart/alternative`: the body as plain text and as a small HTML page
//! (escaped; the deep link as a link when it is `http(s)`), `Subject` the title, `From` from
//! config, `Content-Language` the recipient's locale, and `Message-ID`
//! `<notification-{id}@{from's domain}>`, the same for every try of one notification so that
//! mail systems can drop duplicates.
//!
//! Answers: 2xx Delivered; 550 (mailbox unavailable: no enhanced code, or 5.1.x / 5.2.1) Gone;
//! other 5xx (550 5.7.x is a policy refusal, not a dead address) Rejected; 4xx Retry;
//! connection, TLS and timeout failures Retry; an address that does not parse Rejected.

use std::time::Duration;

use anyhow::Context as _;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use tokio::sync::Semaphore;

use super::{Channel, PushMessage, SendOutcome, Target, wrong_target};
use crate::config::{EmailConfig, EmailTls};

/// The e-mail channel.
pub(super) struct EmailChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The domain of `from`, for Message-IDs.
    domain: String,
    /// Longest one send may take, connecting included.
    timeout: Duration,
    /// Most sends in flight (also the pool's size). A tokio semaphore: held across the send.
    budget: Semaphore,
}

impl EmailChannel {
    pub(super) fn new(config: &EmailConfig) -> anyhow::Result<Self> {
        let from: Mailbox = config
            .from
            .parse()
            .with_context(|| format!("push.email.from {:?} is not a mailbox", config.from))?;
        let domain = from.email.domain().to_owned();
        let tls_parameters = || -> anyhow::Result<TlsParameters> {
            let mut builder = TlsParameters::builder(config.host.clone());
            if let Some(path) = &config.ca_file {
                let pem = std::fs::read(path)
                    .with_context(|| format!("push.email.ca_file: reading {}", path.display()))?;
                let ca = Certificate::from_pem(&pem).with_context(|| {
                    format!(
                        "push.email.ca_file {} is not a PEM certificate",
                        path.display()
                    )
                })?;
                builder = builder.add_root_certificate(ca);
            }
            builder.build_rustls().context("push.email: TLS settings")
        };
        let (tls, default_port) = match config.tls {
            EmailTls::Starttls => (Tls::Required(tls_parameters()?), 587),
            EmailTls::Tls => (Tls::Wrapper(tls_parameters()?), 465),
            EmailTls::None => (Tls::None, 25),
        };
        let concurrency = config.policy.concurrency.max(1);
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.clone())
                .port(config.port.unwrap_or(default_port))
                .tls(tls)
                .timeout(Some(config.policy.timeout))
                .pool_config(
                    PoolConfig::new().max_size(u32::try_from(concurrency).unwrap_or(u32::MAX)),
                );
        if let Some(name) = &config.helo_name {
            builder = builder.hello_name(ClientId::Domain(name.clone()));
        }
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            domain,
            timeout: config.policy.timeout,
            budget: Semaphore::new(concurrency),
        })
    }

    fn message(
        &self,
        address: &str,
        locale: &str,
        message: &PushMessage,
    ) -> Result<Message, String> {
        let to: Mailbox = address
            .parse()
            .map_err(|_| "the address is not an e-mail address".to_owned())?;
        let mut email = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.title.clone())
            .message_id(Some(message_id(&message.id, &self.domain)))
            .multipart(MultiPart::alternative_plain_html(
                text_body(message),
                html_body(locale, message),
            ))
            .map_err(|e| format!("building the message: {e}"))?;
        if let Some(language) = language_tag(locale) {
            email.headers_mut().insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str("Content-Language"),
                language.to_owned(),
            ));
        }
        Ok(email)
    }

    async fn send_to(&self, address: &str, locale: &str, message: &PushMessage) -> SendOutcome {
        let email = match self.message(address, locale, message) {
            Ok(email) => email,
            Err(reason) => {
                tracing::warn!(channel = "email", notification = %message.id, %reason, "e-mail rejected before sending");
                return SendOutcome::Rejected { reason };
            }
        };
        let Ok(_permit) = self.budget.acquire().await else {
            return SendOutcome::Retry { after: None };
        };
        let sent = tokio::time::timeout(self.timeout, self.transport.send(email)).await;
        let outcome = match &sent {
            Ok(Ok(_)) => SendOutcome::Delivered,
            Ok(Err(error)) => classify(error),
            Err(_) => SendOutcome::Retry { after: None },
        };
        match &outcome {
            SendOutcome::Delivered => {}
            SendOutcome::Gone => {
                tracing::info!(channel = "email", notification = %message.id, "the mailbox is unavailable");
            }
            SendOutcome::Rejected { reason } => {
                tracing::warn!(channel = "email", notification = %message.id, %reason, "the SMTP server refused the message");
            }
            SendOutcome::Retry { .. } => {
                let detail = match &sent {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no answer within {} ms", self.timeout.as_millis()),
                };
                tracing::warn!(channel = "email", notification = %message.id, %detail, "e-mail not sent; retry later");
            }
        }
        outcome
    }
}

#[async_trait::async_trait]
impl Channel for EmailChannel {
    async fn send(&self, target: &Target, message: &PushMessage) -> SendOutcome {
        match target {
            Target::Email { address, locale } => self.send_to(address, locale, message).await,
            other => wrong_target("email", other),
        }
    }
}

fn classify(error: &lettre::transport::smtp::Error) -> SendOutcome {
    let text = std::error::Error::source(error)
        .map(ToString::to_string)
        .unwrap_or_default();
    outcome_of(
        error.status().map(u16::from),
        error.is_permanent(),
        error.is_transient(),
        &text,
    )
}

/// The outcome of an SMTP failure: its reply code (if the server answered), and the text after
/// it (which starts with the enhanced status code, when the server has them).
fn outcome_of(code: Option<u16>, permanent: bool, transient: bool, text: &str) -> SendOutcome {
    match code {
        Some(550) if mailbox_unavailable(text) => SendOutcome::Gone,
        Some(code) if permanent => SendOutcome::Rejected {
            reason: format!("{code} {text}"),
        },
        Some(_) if transient => SendOutcome::Retry { after: None },
        // No reply code: connection, TLS, timeout, a reply that does not parse.
        _ => SendOutcome::Retry { after: None },
    }
}

/// Whether a 550's text says the mailbox is unavailable rather than that the message was refused
/// (`5.7.x`, policy; `5.6.x`, content).
fn mailbox_unavailable(text: &str) -> bool {
    let enhanced = text.split_whitespace().next().filter(|word| {
        let parts: Vec<&str> = word.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    match enhanced {
        None => true,
        Some(code) => code.starts_with("5.1.") || code == "5.2.1",
    }
}

/// `<notification-{id}@{domain}>`, the id kept to the characters a Message-ID takes.
fn message_id(id: &str, domain: &str) -> String {
    let id: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("<notification-{id}@{domain}>")
}

/// A BCP 47 language tag, or nothing.
fn language_tag(locale: &str) -> Option<&str> {
    let locale = locale.trim();
    let valid = !locale.is_empty()
        && locale.len() <= 35
        && locale
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then_some(locale)
}

fn text_body(message: &PushMessage) -> String {
    match &message.deep_link {
        Some(link) => format!("{}\n\n{link}\n", message.body),
        None => format!("{}\n", message.body),
    }
}

fn html_body(locale: &str, message: &PushMessage) -> String {
    let lang = language_tag(locale)
        .map(|tag| format!(" lang=\"{}\"", escape(&tag.replace('_', "-"))))
        .unwrap_or_default();
    let link = message
        .deep_link
        .as_deref()
        .filter(|link| link.starts_with("https://") || link.starts_with("http://"))
        .map(|link| format!("<p><a href=\"{}\">{}</a></p>\n", escape(link), escape(link)))
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html{lang}>\n<head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n<p>{body}</p>\n{link}</body>\n</html>\n",
        title = escape(&message.title),
        body = escape(&message.body).replace('\n', "<br>\n"),
    )
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn smtp_replies_map_to_outcomes() {
        assert_eq!(
            outcome_of(Some(550), true, false, "5.1.1 <a@b>: mailbox unavailable"),
            SendOutcome::Gone
        );
        assert_eq!(
            outcome_of(Some(550), true, false, "mailbox unavailable"),
            SendOutcome::Gone
        );
        assert!(matches!(
            outcome_of(Some(550), true, false, "5.7.1 refused by policy"),
            SendOutcome::Rejected { .. }
        ));
        assert!(matches!(
            outcome_of(Some(554), true, false, "5.3.0 no"),
            SendOutcome::Rejected { .. }
        ));
        assert_eq!(
            outcome_of(Some(452), false, true, "4.2.2 full"),
            SendOutcome::Retry { after: None }
        );
        assert_eq!(
            outcome_of(Some(421), false, true, ""),
            SendOutcome::Retry { after: None }
        );
        assert_eq!(
            outcome_of(None, false, false, "connection refused"),
            SendOutcome::Retry { after: None }
        );
    }

    #[test]
    fn the_html_is_escaped_and_links_only_to_the_web() {
        let message = PushMessage {
            id: "n/1".into(),
            title: "<b>Hi</b>".into(),
            body: "a & b".into(),
            data: BTreeMap::new(),
            deep_link: Some("https://shop.example/o?a=1&b=2".into()),
            collapse_key: None,
            urgent: false,
            ttl: Duration::ZERO,
        };
        let html = html_body("de-CH", &message);
        assert!(html.contains("<html lang=\"de-CH\">"), "{html}");
        assert!(html.contains("<h1>&lt;b&gt;Hi&lt;/b&gt;</h1>"), "{html}");
        assert!(html.contains("<p>a &amp; b</p>"), "{html}");
        assert!(
            html.contains("href=\"https://shop.example/o?a=1&amp;b=2\""),
            "{html}"
        );
        let app_link = PushMessage {
            deep_link: Some("app://orders/1".into()),
            ..message.clone()
        };
        assert!(!html_body("en", &app_link).contains("href"));
        assert!(!html_body("\"><script>", &message).contains("<script>"));
        assert_eq!(
            message_id("n/1", "example.com"),
            "<notification-n_1@example.com>"
        );
    }
}
