//! `hxjobs notify test <target>`.

use clap::Subcommand;

use super::CliResult;
use crate::config::Config;
use crate::ops::Actor;

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
            let ops = super::ops(config).await?;
            let answer = ops
                .notify_test(&Actor::cli(), &target)
                .await
                .map_err(super::refused)?;
            println!("test notification sent to {target}: {answer}");
            Ok(())
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
