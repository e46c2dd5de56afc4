//! Sending one notification to one target: a webhook or a mail.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{json, Value};
use sha2::Sha256;

use super::{text, Due};
use crate::config::{Config, NotifyTarget, SmtpSecurity};

/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Sender {
    config: Arc<Config>,
    http: reqwest::Client,
}

impl Sender {
    pub fn new(config: Arc<Config>) -> Result<Sender, String> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("hxjobs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Sender { config, http })
    }

    pub fn max_attempts(&self) -> u32 {
        self.config.notify.max_attempts
    }

    /// Sends `due` to its target; what the receiver answered, or why not.
    pub async fn deliver(&self, due: &Due) -> Result<String, String> {
        let target =
            self.config.notify.target(&due.target).ok_or_else(|| {
                format!("no target `{}` in this process's configuration", due.target)
            })?;
        self.send(target, due.id, &due.event, &due.payload).await
    }

    /// Sends a test message to `target` at once (`hxjobs notify test`).
    pub async fn test(&self, target: &NotifyTarget) -> Result<String, String> {
        let payload = json!({ "event": "test", "target": target.name() });
        self.send(target, 0, "test", &payload).await
    }

    async fn send(
        &self,
        target: &NotifyTarget,
        id: i64,
        event: &str,
        payload: &Value,
    ) -> Result<String, String> {
        let public_url = self.config.api.public_url.as_deref();
        let words = text(payload, public_url);
        match target {
            NotifyTarget::Webhook { url, secret, .. } => {
                let url = url.expose();
                // Slack takes `text`; other receivers read `hxjobs`.
                let body = json!({ "text": words, "hxjobs": payload });
                let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
                let mut request = self
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-hxjobs-event", event)
                    .header("x-hxjobs-delivery", id.to_string());
                if let Some(secret) = secret {
                    request =
                        request.header("x-hxjobs-signature-256", signature(secret.expose(), &body));
                }
                let response =
                    request.body(body).send().await.map_err(|e| {
                        format!("POST {}: {}", crate::redact::url(url), describe(e))
                    })?;
                let status = response.status();
                if status.is_success() {
                    Ok(format!("HTTP {}", status.as_u16()))
                } else {
                    let text = response.text().await.unwrap_or_default();
                    let text: String = text.chars().take(200).collect();
                    Err(format!("HTTP {}: {}", status.as_u16(), text.trim()))
                }
            }
            NotifyTarget::Email {
                host,
                port,
                security,
                username,
                password,
                from,
                to,
                ..
            } => {
                let subject = words
                    .lines()
                    .next()
                    .unwrap_or("hxjobs")
                    .chars()
                    .take(120)
                    .collect::<String>();
                let body = format!(
                    "{words}\n\n{}\n",
                    serde_json::to_string_pretty(payload).unwrap_or_default()
                );
                let from: Mailbox = from.parse().map_err(|e| format!("from {from:?}: {e}"))?;
                let mut message = Message::builder().from(from).subject(subject);
                for address in to {
                    let mailbox: Mailbox = address
                        .parse()
                        .map_err(|e| format!("to {address:?}: {e}"))?;
                    message = message.to(mailbox);
                }
                let message = message
                    .header(ContentType::TEXT_PLAIN)
                    .body(body)
                    .map_err(|e| format!("building the mail: {e}"))?;
                let builder = match security {
                    SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
                    SmtpSecurity::Starttls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                    }
                    SmtpSecurity::None => Ok(
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
                    ),
                }
                .map_err(|e| format!("SMTP {host}: {e}"))?;
                let mut builder = builder.timeout(Some(TIMEOUT));
                if let Some(port) = port {
                    builder = builder.port(*port);
                }
                if let (Some(user), Some(password)) = (username, password) {
                    builder = builder.credentials(Credentials::new(
                        user.clone(),
                        password.expose().to_string(),
                    ));
                }
                let transport = builder.build();
                let response = transport
                    .send(message)
                    .await
                    .map_err(|e| format!("SMTP {host}: {e}"))?;
                Ok(format!("SMTP {}", response.code()))
            }
        }
    }
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The error and its causes, without the URL (which may carry a token).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_rfc_4231_hmac() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
