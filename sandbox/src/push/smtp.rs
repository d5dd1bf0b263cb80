//! An SMTP sink (RFC 5321, without TLS or AUTH): speaks enough for a mail client to hand it a
//! message (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), records every message it accepts,
//! and delivers nothing.
//!
//! Recipients whose local part starts with `unknown-` are refused `550 5.1.1` (no such
//! mailbox), `full-` `452 4.2.2` (mailbox full, try later), `reject-` `550 5.7.1` (refused by
//! policy); a message to `broken-` recipients is refused after its data, `554 5.3.0`. The
//! fault knobs act on the greeting: `error_rate` answers `421` and hangs up, `timeout_rate`
//! stalls before the greeting, `malformed_rate` greets with a garbled line; `latency_ms` delays
//! every reply. Each command is counted as `"SMTP <VERB>"`.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::{EmailReceived, PushState, ReceivedPush};
use crate::faults::Faults;

/// Largest message accepted (advertised as `SIZE`).
const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
/// Longest command line accepted (RFC 5321 says 512; generous).
const MAX_LINE_BYTES: usize = 4096;
/// A session idle this long is closed (RFC 5321 suggests 5 minutes).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The name the sink greets with.
const NAME: &str = "sandbox-smtp";

/// Serves SMTP on `listener` until `shutdown` flips.
pub(crate) fn spawn(
    listener: TcpListener,
    faults: Arc<Faults>,
    push: Arc<PushState>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut sessions = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let Ok((stream, _)) = accepted else { continue };
            let (faults, push, mut stop) =
                (Arc::clone(&faults), Arc::clone(&push), shutdown.clone());
            sessions.spawn(async move {
                tokio::select! {
                    result = session(stream, &faults, &push) => {
                        if let Err(error) = result {
                            tracing::debug!(%error, "sandbox SMTP session ended");
                        }
                    }
                    _ = stop.wait_for(|stop| *stop) => {}
                }
            });
            while sessions.try_join_next().is_some() {}
        }
        sessions.shutdown().await;
    })
}

/// The envelope of the message being received.
#[derive(Default)]
struct Envelope {
    from: Option<String>,
    to: Vec<String>,
}

async fn session(stream: TcpStream, faults: &Faults, push: &PushState) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let latency = Duration::from_millis(faults.knobs().latency_ms);
    let reply = move |text: String| async move {
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        text
    };

    let (error, timeout, malformed) = faults.roll();
    if error {
        let text = reply(format!(
            "421 4.3.2 {NAME} service not available (sandbox fault injection)\r\n"
        ))
        .await;
        write.write_all(text.as_bytes()).await?;
        return Ok(());
    }
    if timeout {
        faults.stall().await;
    }
    if malformed {
        write.write_all(b"2?0 garbled greeting\r\n").await?;
        return Ok(());
    }
    let greeting = reply(format!("220 {NAME} ESMTP Switchyard sandbox sink\r\n")).await;
    write.write_all(greeting.as_bytes()).await?;

    let mut greeted = false;
    let mut envelope = Envelope::default();
    loop {
        let Some(line) = read_line(&mut reader).await? else {
            return Ok(());
        };
        let (verb, argument) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let verb = verb.to_ascii_uppercase();
        let known = [
            "EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT",
        ];
        faults.count(format!(
            "SMTP {}",
            if known.contains(&verb.as_str()) {
                verb.as_str()
            } else {
                "(unknown)"
            }
        ));
        let answer = match verb.as_str() {
            "EHLO" => {
                greeted = true;
                envelope = Envelope::default();
                format!(
                    "250-{NAME} greets {argument}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE {MAX_MESSAGE_BYTES}\r\n"
                )
            }
            "HELO" => {
                greeted = true;
                envelope = Envelope::default();
                format!("250 {NAME}\r\n")
            }
            "MAIL" if !greeted => "503 5.5.1 Send EHLO first\r\n".to_owned(),
            "MAIL" => match address(argument, "FROM:") {
                Some(from) => {
                    envelope = Envelope {
                        from: Some(from),
                        to: Vec::new(),
                    };
                    "250 2.1.0 OK\r\n".to_owned()
                }
                None => "501 5.5.4 Syntax: MAIL FROM:<address>\r\n".to_owned(),
            },
            "RCPT" if envelope.from.is_none() => "503 5.5.1 Send MAIL first\r\n".to_owned(),
            "RCPT" => match address(argument, "TO:") {
                Some(to) => {
                    let local = to
                        .split('@')
                        .next()
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    if local.starts_with("unknown-") {
                        format!("550 5.1.1 <{to}>: mailbox unavailable\r\n")
                    } else if local.starts_with("full-") {
                        format!("452 4.2.2 <{to}>: mailbox full, try again later\r\n")
                    } else if local.starts_with("reject-") {
                        format!("550 5.7.1 <{to}>: message refused by policy\r\n")
                    } else {
                        envelope.to.push(to);
                        "250 2.1.5 OK\r\n".to_owned()
                    }
                }
                None => "501 5.5.4 Syntax: RCPT TO:<address>\r\n".to_owned(),
            },
            "DATA" if envelope.to.is_empty() => "503 5.5.1 Send RCPT first\r\n".to_owned(),
            "DATA" => {
                let go = reply("354 End data with <CR><LF>.<CR><LF>\r\n".to_owned()).await;
                write.write_all(go.as_bytes()).await?;
                let Some(data) = read_data(&mut reader).await? else {
                    return Ok(());
                };
                let envelope = std::mem::take(&mut envelope);
                let broken = envelope
                    .to
                    .iter()
                    .any(|to| to.to_ascii_lowercase().starts_with("broken-"));
                match data {
                    _ if broken => "554 5.3.0 the message could not be delivered\r\n".to_owned(),
                    Data::TooLarge => "552 5.3.4 message too big\r\n".to_owned(),
                    Data::Message(data) => {
                        push.record(ReceivedPush::Email(EmailReceived {
                            from: envelope.from.unwrap_or_default(),
                            to: envelope.to,
                            subject: subject(&data),
                            data,
                            received_at: chrono::Utc::now(),
                        }));
                        "250 2.0.0 OK queued\r\n".to_owned()
                    }
                }
            }
            "RSET" => {
                envelope = Envelope::default();
                "250 2.0.0 OK\r\n".to_owned()
            }
            "NOOP" => "250 2.0.0 OK\r\n".to_owned(),
            "QUIT" => {
                let bye = reply("221 2.0.0 Bye\r\n".to_owned()).await;
                write.write_all(bye.as_bytes()).await?;
                return Ok(());
            }
            _ => "502 5.5.2 Command not recognized\r\n".to_owned(),
        };
        let answer = reply(answer).await;
        write.write_all(answer.as_bytes()).await?;
    }
}

/// One line without its CRLF; `None` at end of stream or when idle too long.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let read = tokio::time::timeout(IDLE_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    match read {
        Err(_) | Ok(Ok(0)) => Ok(None),
        Ok(Err(error)) => Err(error),
        Ok(Ok(_)) if line.len() > MAX_LINE_BYTES => Ok(None),
        Ok(Ok(_)) => {
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            Ok(Some(String::from_utf8_lossy(&line).into_owned()))
        }
    }
}

enum Data {
    Message(String),
    TooLarge,
}

/// The message after `354`, up to the line holding only `.`, dot-stuffing undone.
async fn read_data<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Data>> {
    let mut message = String::new();
    let mut too_large = false;
    loop {
        let mut line = Vec::new();
        let read = tokio::time::timeout(IDLE_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
        match read {
            Err(_) | Ok(Ok(0)) => return Ok(None),
            Ok(Err(error)) => return Err(error),
            Ok(Ok(_)) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let content = text.trim_end_matches(['\r', '\n']);
        if content == "." {
            break;
        }
        // RFC 5321 section 4.5.2: a line that starts with a period loses it.
        let unstuffed = content.strip_prefix('.').unwrap_or(content);
        if message.len() + unstuffed.len() > MAX_MESSAGE_BYTES {
            too_large = true;
        }
        if !too_large {
            message.push_str(unstuffed);
            message.push_str("\r\n");
        }
    }
    Ok(Some(if too_large {
        Data::TooLarge
    } else {
        Data::Message(message)
    }))
}

/// The address in `FROM:<a@b> PARAMS` / `TO:<a@b>` (`<>` is the null sender).
fn address(argument: &str, keyword: &str) -> Option<String> {
    let rest = argument.trim_start();
    if rest.len() < keyword.len() || !rest[..keyword.len()].eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = rest[keyword.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some(inner[..end].to_owned())
}

/// The `Subject` header of a message, unfolded.
fn subject(message: &str) -> Option<String> {
    let mut found: Option<String> = None;
    for line in message.split("\r\n") {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(subject) = found.as_mut() {
                subject.push_str(line);
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("subject")
        {
            found = Some(value.trim_start().to_owned());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_out_of_their_brackets() {
        assert_eq!(
            address("FROM:<a@b.c> BODY=8BITMIME", "FROM:").as_deref(),
            Some("a@b.c")
        );
        assert_eq!(address("from: <a@b.c>", "FROM:").as_deref(), Some("a@b.c"));
        assert_eq!(address("FROM:<>", "FROM:").as_deref(), Some(""));
        assert_eq!(address("TO:a@b.c", "TO:"), None);
    }

    #[test]
    fn the_subject_is_unfolded_and_stops_at_the_body() {
        let message = "From: a@b\r\nSubject: Your order\r\n has shipped\r\nTo: c@d\r\n\r\nSubject: not this\r\n";
        assert_eq!(subject(message).as_deref(), Some("Your order has shipped"));
        assert_eq!(subject("From: a\r\n\r\nSubject: body\r\n"), None);
    }

    #[tokio::test]
    async fn data_is_unstuffed_up_to_the_lone_dot() {
        let wire = b"Subject: x\r\n\r\n..leading dot\r\nplain\r\n.\r\nNOOP\r\n".to_vec();
        let mut reader = BufReader::new(wire.as_slice());
        let Some(Data::Message(message)) = read_data(&mut reader).await.unwrap() else {
            panic!("no message");
        };
        assert_eq!(message, "Subject: x\r\n\r\n.leading dot\r\nplain\r\n");
    }
}
