//! Trigger rules: when a task runs, from the states its upstream tasks
//! ended in (`trigger_rule` in a job file, `all_success` by default).

use serde::Deserialize;

use crate::ledger::TaskState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    /// Every upstream task succeeded. One failed: `upstream_failed`; one
    /// skipped (and none failed): `skipped`.
    #[default]
    AllSuccess,
    /// Every upstream task ended, whatever its state.
    AllDone,
    /// At least one upstream task failed (or could not run because of a
    /// failure); otherwise `skipped`.
    OneFailed,
    /// No upstream task failed: succeeded or skipped.
    NoneFailed,
    /// At least one upstream task succeeded; none did: `upstream_failed`
    /// when one failed, else `skipped`.
    OneSuccess,
}

/// What a rule decided for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Run,
    Skip(String),
    UpstreamFailed(String),
}

impl TriggerRule {
    pub const ALL: [TriggerRule; 5] = [
        TriggerRule::AllSuccess,
        TriggerRule::AllDone,
        TriggerRule::OneFailed,
        TriggerRule::NoneFailed,
        TriggerRule::OneSuccess,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TriggerRule::AllSuccess => "all_success",
            TriggerRule::AllDone => "all_done",
            TriggerRule::OneFailed => "one_failed",
            TriggerRule::NoneFailed => "none_failed",
            TriggerRule::OneSuccess => "one_success",
        }
    }

    /// Decides from the upstream tasks' ended states. A task with no
    /// upstream always runs. The caller counts a task skipped by design
    /// (not run in backfills) as succeeded.
    pub fn decide(self, upstream: &[(&str, TaskState)]) -> Decision {
        if upstream.is_empty() {
            return Decision::Run;
        }
        let failed = upstream.iter().find(|(_, s)| failed(*s)).map(|(t, _)| *t);
        let skipped = upstream
            .iter()
            .find(|(_, s)| *s == TaskState::Skipped)
            .map(|(t, _)| *t);
        let succeeded = upstream.iter().any(|(_, s)| *s == TaskState::Success);
        let upstream_failed =
            |t: &str| Decision::UpstreamFailed(format!("upstream task `{t}` did not succeed"));
        match self {
            TriggerRule::AllDone => Decision::Run,
            TriggerRule::AllSuccess => match (failed, skipped) {
                (Some(t), _) => upstream_failed(t),
                (None, Some(t)) => Decision::Skip(format!("upstream task `{t}` was skipped")),
                (None, None) => Decision::Run,
            },
            TriggerRule::NoneFailed => match failed {
                Some(t) => upstream_failed(t),
                None => Decision::Run,
            },
            TriggerRule::OneFailed => match failed {
                Some(_) => Decision::Run,
                None => Decision::Skip("no upstream task failed (one_failed)".into()),
            },
            TriggerRule::OneSuccess => match (succeeded, failed) {
                (true, _) => Decision::Run,
                (false, Some(_)) => {
                    Decision::UpstreamFailed("no upstream task succeeded (one_success)".into())
                }
                (false, None) => Decision::Skip("no upstream task succeeded (one_success)".into()),
            },
        }
    }
}

/// Ended without success because of a failure, its own or upstream.
fn failed(state: TaskState) -> bool {
    !matches!(state, TaskState::Success | TaskState::Skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::{Failed, Skipped, Success};

    #[test]
    fn each_rule_decides_as_documented() {
        let ok = [("a", Success), ("b", Success)];
        let one_failed = [("a", Success), ("b", Failed)];
        let one_skipped = [("a", Success), ("b", Skipped)];
        let none_ran = [("a", TaskState::UpstreamFailed), ("b", Skipped)];
        let all_skipped = [("a", Skipped)];
        use Decision::*;
        use TriggerRule::*;
        let cases: [(TriggerRule, [bool; 5]); 5] = [
            // ok, one failed, one skipped, none ran, all skipped: runs?
            (AllSuccess, [true, false, false, false, false]),
            (AllDone, [true, true, true, true, true]),
            (OneFailed, [false, true, false, true, false]),
            (NoneFailed, [true, false, true, false, true]),
            (OneSuccess, [true, true, true, false, false]),
        ];
        for (rule, runs) in cases {
            let inputs: [&[(&str, TaskState)]; 5] =
                [&ok, &one_failed, &one_skipped, &none_ran, &all_skipped];
            for (input, want) in inputs.iter().zip(runs) {
                assert_eq!(
                    rule.decide(input) == Run,
                    want,
                    "{} with {input:?}",
                    rule.as_str()
                );
            }
        }
        assert_eq!(
            AllSuccess.decide(&one_failed),
            UpstreamFailed("upstream task `b` did not succeed".into())
        );
        assert_eq!(
            AllSuccess.decide(&one_skipped),
            Skip("upstream task `b` was skipped".into())
        );
        assert!(matches!(OneFailed.decide(&ok), Skip(_)));
        assert!(matches!(OneSuccess.decide(&none_ran), UpstreamFailed(_)));
        assert!(matches!(OneSuccess.decide(&all_skipped), Skip(_)));
        assert_eq!(OneFailed.decide(&[]), Run);
    }
}
