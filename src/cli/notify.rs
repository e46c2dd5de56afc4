//! `hxjobs notify test <target>`.

use std::sync::Arc;

use clap::Subcommand;

use super::{CliResult, Failure};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test message to a configured target now, and say what it answered.
    Test {
        /// A `[[notify.targets]]` name.
        target: String,
    },
    /// The targets configured, and which events each hears of.
    List,
}

pub async fn notify(config: &Config, command: NotifyCommand) -> CliResult {
    match command {
        NotifyCommand::Test { target } => {
            let Some(t) = config.notify.target(&target) else {
                let names: Vec<&str> = config.notify.targets.iter().map(|t| t.name()).collect();
                return Err(Failure {
                    code: 2,
                    message: format!(
                        "no notification target `{target}` (configured: {})",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ),
                });
            };
            let sender = crate::notify::Sender::new(Arc::new(config.clone()))?;
            match sender.test(t).await {
                Ok(answer) => {
                    println!("test notification sent to {target}: {answer}");
                    Ok(())
                }
                Err(e) => Err(Failure::from(format!(
                    "test notification to {target} failed: {e}"
                ))),
            }
        }
        NotifyCommand::List => {
            let n = &config.notify;
            for t in &n.targets {
                let kind = match t {
                    crate::config::NotifyTarget::Webhook { .. } => "webhook",
                    crate::config::NotifyTarget::Email { .. } => "email",
                };
                let mut rules = Vec::new();
                for (rule, names) in [
                    ("on_failure", &n.on_failure),
                    ("on_task_failure", &n.on_task_failure),
                    ("on_recovered", &n.on_recovered),
                    ("on_late", &n.on_late),
                    ("on_ingest", &n.on_ingest),
                ] {
                    if names.iter().any(|x| x == t.name()) {
                        rules.push(rule);
                    }
                }
                println!(
                    "{:<20} {:<8} every job: {}",
                    t.name(),
                    kind,
                    if rules.is_empty() {
                        "-".to_string()
                    } else {
                        rules.join(", ")
                    }
                );
            }
            Ok(())
        }
    }
}
