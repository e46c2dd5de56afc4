//! Notification targets: a test message sent now (admins).

use std::sync::Arc;

use super::{Actor, Error, Kind, Need, Ops, Result};

impl Ops {
    /// Sends a test message to the configured target `name` now; what it
    /// answered. Recorded in the audit log either way.
    pub async fn notify_test(&self, actor: &Actor, name: &str) -> Result<String> {
        let r = async {
            actor.require(Need::Admin, None)?;
            let notify = &self.config.notify;
            let target = notify.target(name).ok_or_else(|| {
                let names: Vec<&str> = notify.targets.iter().map(|t| t.name()).collect();
                Error::not_found(
                    "unknown_target",
                    format!(
                        "no notification target `{name}` (configured: {})",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ),
                )
                .field("target")
            })?;
            let sender = crate::notify::Sender::new(Arc::new((*self.config).clone()))
                .map_err(|e| Error::internal("notify_failed", e))?;
            sender.test(target).await.map_err(|e| {
                Error::new(
                    Kind::Unavailable,
                    "notification_failed",
                    format!(
                        "test notification to {name} failed: {}",
                        crate::redact::text(&e)
                    ),
                )
            })
        }
        .await;
        self.audited(actor, "notify_test", name, &r).await;
        r
    }
}
