//! Who may do what. A role grants a level: `viewer` reads everything,
//! `operator` also runs and controls jobs and generates reports, `admin`
//! also runs retention, sends test notifications and deletes. An actor may
//! be limited to the jobs matching some globs; its reads are not limited.

use serde::Serialize;

pub use crate::config::Role;

use super::Error;

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Need {
    /// Any read.
    Read,
    /// Trigger, clear, mark, cancel, pause, backfill, generate a report.
    Operate,
    /// Retention, notification tests, deletions, the audit log.
    Admin,
}

impl Need {
    /// The least role that has it.
    pub fn role(self) -> Role {
        match self {
            Need::Read => Role::Viewer,
            Need::Operate => Role::Operator,
            Need::Admin => Role::Admin,
        }
    }
}

/// How an actor reached hxjobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Means {
    /// The command line, on a machine with the database's credentials.
    Cli,
    /// An API bearer token.
    Token,
    /// A console login (with a token or through the identity provider).
    Session,
    /// A loopback-only API without tokens: every local process.
    Loopback,
    /// hxjobs itself (the scheduler).
    System,
}

impl Means {
    pub fn as_str(self) -> &'static str {
        match self {
            Means::Cli => "cli",
            Means::Token => "token",
            Means::Session => "session",
            Means::Loopback => "loopback",
            Means::System => "system",
        }
    }
}

/// Who asks: the name the ledger records (`cli:<user>`, `api:<token>`,
/// `ui:<token>`, `oidc:<email>`), by which means, with which role, and the
/// jobs it may change (`None`: all).
#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    pub name: String,
    pub means: Means,
    pub role: Role,
    pub jobs: Option<Vec<String>>,
    /// The client's address, when it came over the network.
    pub client: Option<String>,
}

impl Actor {
    pub fn new(name: impl Into<String>, means: Means, role: Role) -> Actor {
        Actor {
            name: name.into(),
            means,
            role,
            jobs: None,
            client: None,
        }
    }

    /// Where the request came from.
    pub fn from(mut self, client: Option<std::net::IpAddr>) -> Actor {
        self.client = client.map(|c| c.to_string());
        self
    }

    /// The person at the command line: an admin (they hold the database's
    /// credentials).
    pub fn cli() -> Actor {
        Actor::new(crate::config::cli_actor(), Means::Cli, Role::Admin)
    }

    /// Limits what it may change to the jobs matching `globs`.
    pub fn only_jobs(mut self, globs: Option<Vec<String>>) -> Actor {
        self.jobs = globs.filter(|g| !g.is_empty());
        self
    }

    /// Whether it may do what `need` names (on `job`, when one is named).
    pub fn may(&self, need: Need, job: Option<&str>) -> bool {
        if self.role < need.role() {
            return false;
        }
        match (need, job, &self.jobs) {
            (Need::Read, _, _) | (_, None, _) | (_, _, None) => true,
            (_, Some(job), Some(globs)) => globs.iter().any(|g| glob_matches(g, job)),
        }
    }

    /// [`Actor::may`], or the refusal that says what is missing.
    pub fn require(&self, need: Need, job: Option<&str>) -> Result<(), Error> {
        if self.may(need, job) {
            return Ok(());
        }
        let what = match need {
            Need::Read => "reading",
            Need::Operate => "running and controlling jobs",
            Need::Admin => "this",
        };
        let message = if self.role < need.role() {
            format!(
                "{} has the role {}; {what} needs {}",
                self.name,
                self.role,
                need.role()
            )
        } else {
            format!(
                "{} may change only the jobs {}; not {}",
                self.name,
                self.jobs.as_deref().unwrap_or_default().join(", "),
                job.unwrap_or_default()
            )
        };
        tracing::warn!(actor = %self.name, need = ?need, job, "refused: not allowed");
        Err(Error::forbidden(message))
    }

    /// The ledger's record of the actor with a reason.
    pub fn record(&self, reason: Option<String>) -> crate::ledger::controls::Actor {
        crate::ledger::controls::Actor {
            name: self.name.clone(),
            reason: reason
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty()),
        }
    }
}

/// Whether `name` matches `glob`: `*` any run of characters, `?` one,
/// everything else itself.
pub fn glob_matches(glob: &str, name: &str) -> bool {
    let (g, n): (Vec<char>, Vec<char>) = (glob.chars().collect(), name.chars().collect());
    // Iterative with one backtrack point: linear in practice, never exponential.
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match g.get(gi) {
            Some('*') => {
                star = Some((gi, ni));
                gi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                gi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sg, sn)) => {
                    gi = sg + 1;
                    ni = sn + 1;
                    star = Some((sg, sn + 1));
                }
                None => return false,
            },
        }
    }
    g[gi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("*", "hourly_rollup"));
        assert!(glob_matches("hourly_*", "hourly_rollup"));
        assert!(glob_matches("*_rollup", "hourly_rollup"));
        assert!(glob_matches("h?urly_rollup", "hourly_rollup"));
        assert!(glob_matches("h*r*p", "hourly_rollup"));
        assert!(!glob_matches("daily_*", "hourly_rollup"));
        assert!(!glob_matches("hourly", "hourly_rollup"));
        assert!(!glob_matches("", "x"));
        assert!(glob_matches("", ""));
    }

    #[test]
    fn roles_and_jobs() {
        let viewer = Actor::new("api:v", Means::Token, Role::Viewer);
        assert!(viewer.may(Need::Read, Some("a")));
        assert!(!viewer.may(Need::Operate, Some("a")));
        let op = Actor::new("api:o", Means::Token, Role::Operator)
            .only_jobs(Some(vec!["hourly_*".into()]));
        assert!(op.may(Need::Operate, Some("hourly_rollup")));
        assert!(!op.may(Need::Operate, Some("daily_rollup")));
        assert!(op.may(Need::Read, Some("daily_rollup")));
        assert!(op.may(Need::Operate, None));
        assert!(!op.may(Need::Admin, None));
        let e = op.require(Need::Operate, Some("daily_rollup")).unwrap_err();
        assert_eq!(e.kind, super::super::Kind::Forbidden);
        assert!(e.message.contains("hourly_*"), "{}", e.message);
        let admin = Actor::cli();
        assert!(admin.may(Need::Admin, Some("anything")));
    }
}
