//! The jobs a daemon or API process runs, kept current with `jobs.dir`.
//!
//! A [`Catalog`] holds the loaded [`JobSet`]; [`Catalog::reload`] reads the
//! directory again and swaps in the new set. Added files load, removed ones
//! unload, a changed file loads its new text; a file that turns invalid
//! keeps its last valid version running, and says so in the set's errors.
//! Readers take the current set with [`Catalog::current`] (a cheap `Arc`
//! clone) and keep it for as long as they work with it.

use std::collections::HashMap;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use super::job::{self, Job};

/// A check a loaded job must also pass (e.g. its notification targets
/// exist); `Some(message)` refuses it.
pub type Check = Box<dyn Fn(&Job) -> Option<String> + Send + Sync>;

/// One loaded set of jobs.
#[derive(Debug, Default)]
pub struct JobSet {
    pub jobs: Vec<Arc<Job>>,
    /// Every file that did not load, `file:line: message` each.
    pub errors: Vec<String>,
    /// When each job's current version was loaded by this process.
    pub since: HashMap<String, DateTime<Utc>>,
}

impl Deref for JobSet {
    type Target = [Arc<Job>];

    fn deref(&self) -> &[Arc<Job>] {
        &self.jobs
    }
}

impl JobSet {
    pub fn find(&self, name: &str) -> Option<&Arc<Job>> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

/// What one reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Invalid files whose job keeps its last valid version.
    pub kept: Vec<String>,
    /// The list of invalid files is not what it was.
    pub errors_changed: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// The jobs of one directory, reloadable.
pub struct Catalog {
    dir: PathBuf,
    check: Check,
    current: RwLock<Arc<JobSet>>,
    /// Bumped on every reload that changed something.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Catalog {
    /// Loads `dir` (or the shipped jobs when it does not exist). Fails only
    /// when the directory cannot be read.
    pub fn load(dir: PathBuf, check: Check) -> Result<Catalog, job::Error> {
        let catalog = Catalog {
            dir,
            check,
            current: RwLock::new(Arc::new(JobSet::default())),
            generation: tokio::sync::watch::channel(0).0,
        };
        catalog.reload()?;
        Ok(catalog)
    }

    /// A catalog of fixed jobs (tests, benchmarks): [`Catalog::reload`]
    /// reads no directory and keeps them.
    pub fn fixed(jobs: Vec<Arc<Job>>) -> Catalog {
        let now = Utc::now();
        let since = jobs.iter().map(|j| (j.name.clone(), now)).collect();
        Catalog {
            dir: PathBuf::new(),
            check: Box::new(|_| None),
            current: RwLock::new(Arc::new(JobSet {
                jobs,
                errors: Vec::new(),
                since,
            })),
            generation: tokio::sync::watch::channel(0).0,
        }
    }

    /// The set loaded now.
    pub fn current(&self) -> Arc<JobSet> {
        match self.current.read() {
            Ok(set) => set.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Notified after every reload that changed the set.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Reads the directory again and swaps in what it holds now.
    pub fn reload(&self) -> Result<Changes, job::Error> {
        if self.dir.as_os_str().is_empty() {
            return Ok(Changes::default());
        }
        let old = self.current();
        let prefer: HashMap<String, PathBuf> = old
            .jobs
            .iter()
            .map(|j| (j.name.clone(), j.file.clone()))
            .collect();
        let mut loaded = job::load_preferring(&self.dir, &prefer)?;
        let (ok, refused): (Vec<Job>, Vec<Job>) = std::mem::take(&mut loaded.jobs)
            .into_iter()
            .partition(|j| (self.check)(j).is_none());
        for j in refused {
            if let Some(message) = (self.check)(&j) {
                loaded.errors.push(job::Error {
                    file: j.file.clone(),
                    line: None,
                    message,
                });
            }
        }
        let mut jobs: Vec<Arc<Job>> = ok.into_iter().map(Arc::new).collect();
        let mut errors: Vec<String> = Vec::new();
        let mut changes = Changes::default();
        // A file that no longer loads keeps its last valid version, as long
        // as no other file took the name and the file is still there.
        let taken: Vec<String> = jobs.iter().map(|j| j.name.clone()).collect();
        for e in &loaded.errors {
            let kept = old
                .jobs
                .iter()
                .find(|j| j.file == e.file && e.file.exists() && !taken.contains(&j.name));
            match kept {
                Some(j) => {
                    errors.push(format!(
                        "{e} (the last valid version, {}, keeps running)",
                        j.version
                    ));
                    // A file with several errors keeps its job once.
                    if !changes.kept.contains(&j.name) {
                        changes.kept.push(j.name.clone());
                        jobs.push(j.clone());
                    }
                }
                None => errors.push(e.to_string()),
            }
        }
        errors.dedup();
        jobs.sort_by(|a, b| a.name.cmp(&b.name));
        let now = Utc::now();
        let mut since = HashMap::new();
        for j in &jobs {
            let before = old.find(&j.name);
            match before {
                None => changes.added.push(j.name.clone()),
                Some(b) if b.version != j.version || b.file != j.file => {
                    changes.changed.push(j.name.clone())
                }
                Some(_) => {}
            }
            let unchanged = before.is_some_and(|b| b.version == j.version && b.file == j.file);
            let at = match (unchanged, old.since.get(&j.name)) {
                (true, Some(t)) => *t,
                _ => now,
            };
            since.insert(j.name.clone(), at);
        }
        for j in old.jobs.iter() {
            if !jobs.iter().any(|n| n.name == j.name) {
                changes.removed.push(j.name.clone());
            }
        }
        let first = old.jobs.is_empty() && old.errors.is_empty();
        changes.errors_changed = old.errors != errors;
        let set = Arc::new(JobSet {
            jobs,
            errors,
            since,
        });
        crate::metrics::install();
        metrics::gauge!("hxjobs_job_files_invalid").set(set.errors.len() as f64);
        match self.current.write() {
            Ok(mut c) => *c = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
        if !first && (!changes.is_empty() || changes.errors_changed) {
            self.generation.send_modify(|g| *g += 1);
        }
        Ok(changes)
    }

    /// Reloads every `every` and at once whenever `now` is notified (SIGHUP),
    /// logging what changed, until `stop`.
    pub async fn watch(
        self: Arc<Self>,
        every: std::time::Duration,
        now: Arc<tokio::sync::Notify>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let asked = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                _ = now.notified() => true,
                _ = stop.cancelled() => return,
            };
            let catalog = self.clone();
            let reloaded = tokio::task::spawn_blocking(move || catalog.reload()).await;
            match reloaded {
                Ok(Ok(changes)) => log_changes(&changes, asked, &self.current()),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "job files not reloaded; the loaded jobs keep running")
                }
                Err(e) => tracing::error!(error = %e, "job reload failed"),
            }
        }
    }
}

fn log_changes(changes: &Changes, asked: bool, set: &JobSet) {
    if !changes.is_empty() {
        tracing::info!(
            added = %changes.added.join(","),
            changed = %changes.changed.join(","),
            removed = %changes.removed.join(","),
            jobs = set.jobs.len(),
            "job files reloaded"
        );
    } else if asked {
        tracing::info!(jobs = set.jobs.len(), "job files reloaded: nothing changed");
    }
    if changes.errors_changed || asked {
        for e in &set.errors {
            tracing::error!("invalid job file: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, schedule: &str) -> String {
        format!(
            "name = \"{name}\"\nschedule = \"{schedule}\"\ninterval = \"hour\"\n\
             start_date = \"2026-01-01\"\n[tasks.a]\nkind = \"sql\"\nsql = \"SELECT 1\"\n"
        )
    }

    #[test]
    fn reloads_follow_the_directory_and_keep_the_last_valid_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |f: &str| dir.path().join(f);
        std::fs::write(path("a.toml"), job("a", "5 * * * *")).expect("write");
        let catalog = Catalog::load(dir.path().to_path_buf(), Box::new(|_| None)).expect("load");
        let mut seen = catalog.subscribe();
        let first = catalog.current();
        assert_eq!(first.len(), 1);
        let v1 = first.find("a").expect("a").version.clone();

        // Added and changed.
        std::fs::write(path("b.toml"), job("b", "0 * * * *")).expect("write");
        std::fs::write(path("a.toml"), job("a", "10 * * * *")).expect("write");
        let changes = catalog.reload().expect("reload");
        assert_eq!(changes.added, ["b"]);
        assert_eq!(changes.changed, ["a"]);
        assert!(seen.has_changed().expect("open"));
        seen.mark_unchanged();
        let set = catalog.current();
        let a = set.find("a").expect("a");
        assert_ne!(a.version, v1);
        assert_eq!(
            a.schedule.as_ref().map(|s| s.text.as_str()),
            Some("10 * * * *")
        );

        // Turned invalid: the last valid version keeps running, and says so.
        std::fs::write(path("a.toml"), "name = \"a\"\nschedule = \"nope\"\n").expect("write");
        let changes = catalog.reload().expect("reload");
        assert_eq!(changes.kept, ["a"]);
        assert!(changes.errors_changed);
        let set = catalog.current();
        assert_eq!(
            set.find("a")
                .expect("kept")
                .schedule
                .as_ref()
                .map(|s| s.text.clone()),
            Some("10 * * * *".to_string())
        );
        assert!(
            set.errors[0].contains("a.toml") && set.errors[0].contains("keeps running"),
            "{:?}",
            set.errors
        );

        // Removed: unloaded.
        std::fs::remove_file(path("a.toml")).expect("remove");
        let changes = catalog.reload().expect("reload");
        assert_eq!(changes.removed, ["a"]);
        let set = catalog.current();
        assert!(set.find("a").is_none() && set.errors.is_empty());
        assert_eq!(set.len(), 1);

        // Nothing changed: nobody is woken.
        seen.mark_unchanged();
        assert!(catalog.reload().expect("reload").is_empty());
        assert!(!seen.has_changed().expect("open"));
    }
}
