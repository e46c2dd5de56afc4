//! hxjobs's files (reports, archived days of raw events) in one object
//! store that every node reaches, configured by URL (`[storage] url`):
//! `s3://bucket/prefix` (and S3-compatible servers), `gs://`, `az://`, or a
//! local directory (`file:///…` or a path under the working directory, the
//! default). Credentials come from the environment or the provider's usual
//! chain, never from the URL, and are never printed.
//!
//! A file is written under a temporary key and then moved to its final
//! key, so a reader never sees half of one.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::StorageConfig;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage.url {url:?}: {reason}")]
    Config { url: String, reason: String },
    #[error("{key} is not in the store {store}")]
    NotFound { store: String, key: String },
    #[error("the store {store} did not take or give {key}: {reason}")]
    Unavailable {
        store: String,
        key: String,
        reason: String,
    },
    #[error("{key} in the store {store} did not verify: {detail}")]
    Verify {
        store: String,
        key: String,
        detail: String,
    },
}

/// What a put left in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    pub size: i64,
    pub sha256: String,
}

/// An object under a listed prefix.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// The store answering, and how fast.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub up: bool,
    pub latency_ms: f64,
    pub error: Option<String>,
}

/// The configured store. Cheap to clone; one client per URL per process.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// The URL as configured (it holds no credentials: refused at open).
    shown: Arc<str>,
    /// The directory of a local store.
    local: Option<Arc<std::path::Path>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.shown).finish()
    }
}

/// The key of a generated report's file.
pub fn report_key(name: &str) -> String {
    format!("reports/{name}")
}

/// The key of an archived day: Hive-style, so that query engines read
/// `events/event_date=*/*.parquet` with `event_date` as a column.
pub fn archive_key(day: chrono::NaiveDate) -> String {
    format!("events/event_date={day}/events-{day}.parquet")
}

impl Store {
    /// The store `config` names; one client per URL in a process.
    pub fn open(config: &StorageConfig) -> Result<Store, Error> {
        static OPEN: OnceLock<Mutex<Vec<(String, Store)>>> = OnceLock::new();
        let id = format!("{}|{}|{}", config.url, config.timeout_secs, config.retries);
        let open = OPEN.get_or_init(Default::default);
        if let Ok(open) = open.lock() {
            if let Some((_, store)) = open.iter().find(|(k, _)| *k == id) {
                return Ok(store.clone());
            }
        }
        let store = Store::build(config)?;
        if let Ok(mut open) = open.lock() {
            open.push((id, store.clone()));
        }
        Ok(store)
    }

    fn build(config: &StorageConfig) -> Result<Store, Error> {
        let bad = |reason: String| Error::Config {
            url: crate::redact::url(&config.url),
            reason,
        };
        let target = Target::parse(&config.url).map_err(bad)?;
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: config.retries,
            retry_timeout: Duration::from_secs(config.timeout_secs.saturating_mul(2)),
        };
        let timeout = format!("{}s", config.timeout_secs);
        let connect = format!("{}s", config.timeout_secs.clamp(1, 5));
        let inner: Arc<dyn ObjectStore> = match &target {
            Target::Local(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
                Arc::new(
                    LocalFileSystem::new_with_prefix(dir)
                        .map_err(|e| bad(e.to_string()))?
                        .with_automatic_cleanup(true),
                )
            }
            Target::Cloud { url, prefix } => {
                // Each provider's builder, from its environment, with the
                // same URL, retries and time limits.
                macro_rules! client {
                    ($builder:ty, $key:path) => {
                        Arc::new(
                            <$builder>::from_env()
                                .with_url(url.as_str())
                                .with_retry(retry)
                                .with_config($key(ClientConfigKey::Timeout), &timeout)
                                .with_config($key(ClientConfigKey::ConnectTimeout), &connect)
                                .build()
                                .map_err(|e| bad(e.to_string()))?,
                        )
                    };
                }
                let store: Arc<dyn ObjectStore> = match url.scheme() {
                    "s3" | "s3a" => client!(AmazonS3Builder, AmazonS3ConfigKey::Client),
                    "gs" => client!(GoogleCloudStorageBuilder, GoogleConfigKey::Client),
                    _ => client!(MicrosoftAzureBuilder, AzureConfigKey::Client),
                };
                if prefix.as_ref().is_empty() {
                    store
                } else {
                    Arc::new(PrefixStore::new(store, prefix.clone()))
                }
            }
        };
        let local = match &target {
            Target::Local(dir) => Some(Arc::from(dir.as_path())),
            Target::Cloud { .. } => None,
        };
        Ok(Store {
            inner,
            shown: target.shown().into(),
            local,
        })
    }

    /// The store's URL, for messages (never credentials).
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// Where `key` is, for people: a local path, or the store's URL with it.
    pub fn location(&self, key: &str) -> String {
        match &self.local {
            Some(dir) => dir.join(key).display().to_string(),
            None => format!("{}/{key}", self.shown.trim_end_matches('/')),
        }
    }

    fn key(&self, key: &str) -> Result<Key, Error> {
        let invalid = |detail: String| Error::Verify {
            store: self.shown.to_string(),
            key: key.to_string(),
            detail,
        };
        let parsed = Key::parse(key).map_err(|e| invalid(format!("not a valid key: {e}")))?;
        if parsed.as_ref().is_empty() {
            return Err(invalid("an empty key names no object".into()));
        }
        Ok(parsed)
    }

    /// A prefix to list under; empty lists the whole store.
    fn prefix(&self, prefix: &str) -> Result<Key, Error> {
        Key::parse(prefix).map_err(|e| Error::Verify {
            store: self.shown.to_string(),
            key: prefix.to_string(),
            detail: format!("not a valid prefix: {e}"),
        })
    }

    fn failed(&self, key: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound {
                store: self.shown.to_string(),
                key: key.to_string(),
            },
            e => Error::Unavailable {
                store: self.shown.to_string(),
                key: key.to_string(),
                reason: crate::redact::text(&e.to_string()),
            },
        }
    }

    /// Writes `bytes` under a temporary key, moves it to `key` and checks
    /// the size the store then reports.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<Stored, Error> {
        let final_key = self.key(key)?;
        let partial = self.key(&format!("_partial/{}", uuid::Uuid::new_v4()))?;
        let size = bytes.len() as i64;
        let sha256 = format!("{:x}", Sha256::digest(&bytes));
        self.inner
            .put(&partial, PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| self.failed(key, e))?;
        crate::metrics::storage_bytes("written", size as u64);
        if let Err(e) = self.inner.rename(&partial, &final_key).await {
            let _ = self.inner.delete(&partial).await;
            return Err(self.failed(key, e));
        }
        let meta = self
            .inner
            .head(&final_key)
            .await
            .map_err(|e| self.failed(key, e))?;
        if meta.size as i64 != size {
            return Err(Error::Verify {
                store: self.shown.to_string(),
                key: key.to_string(),
                detail: format!("wrote {size} bytes, the store holds {}", meta.size),
            });
        }
        Ok(Stored {
            key: key.to_string(),
            size,
            sha256,
        })
    }

    /// The whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes, Error> {
        let k = self.key(key)?;
        let got = self.inner.get(&k).await.map_err(|e| self.failed(key, e))?;
        let bytes = got.bytes().await.map_err(|e| self.failed(key, e))?;
        crate::metrics::storage_bytes("read", bytes.len() as u64);
        Ok(bytes)
    }

    /// The object as a stream, and its size; fails before the first byte
    /// when the store does not have it or does not answer.
    pub async fn stream(
        &self,
        key: &str,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, std::io::Error>>), Error> {
        let k = self.key(key)?;
        let got = self.inner.get(&k).await.map_err(|e| self.failed(key, e))?;
        let size = got.meta.size;
        let stream = got
            .into_stream()
            .inspect_ok(|chunk| crate::metrics::storage_bytes("read", chunk.len() as u64))
            .map_err(std::io::Error::other)
            .boxed();
        Ok((size, stream))
    }

    /// The object's size, or `None` when it is not there.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, Error> {
        let k = self.key(key)?;
        match self.inner.head(&k).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed(key, e)),
        }
    }

    /// Removes the object; one already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        let k = self.key(key)?;
        match self.inner.delete(&k).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(key, e)),
        }
    }

    /// Every object under `prefix`, by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, Error> {
        let p = self.prefix(prefix)?;
        let mut out: Vec<Listed> = self
            .inner
            .list(Some(&p))
            .map_ok(|m| Listed {
                key: m.location.to_string(),
                size: m.size,
                modified: m.last_modified,
            })
            .try_collect()
            .await
            .map_err(|e| self.failed(prefix, e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Whether the store answers a listing, and how fast.
    pub async fn probe(&self) -> Probe {
        let started = Instant::now();
        let answer = match self.prefix("reports") {
            Ok(k) => self
                .inner
                .list_with_delimiter(Some(&k))
                .await
                .map(|_| ())
                .map_err(|e| self.failed("reports/", e).to_string()),
            Err(e) => Err(e.to_string()),
        };
        let latency_ms = crate::round(started.elapsed().as_secs_f64() * 1000.0, 2);
        crate::metrics::dependency_up("storage", answer.is_ok());
        Probe {
            up: answer.is_ok(),
            latency_ms,
            error: answer.err(),
        }
    }
}

/// Whether `url` names a store hxjobs can open (checked when the
/// configuration loads; the reason never repeats the URL).
pub fn check_url(url: &str) -> Result<(), String> {
    Target::parse(url).map(|_| ())
}

/// A parsed `storage.url`.
enum Target {
    Local(std::path::PathBuf),
    Cloud { url: url::Url, prefix: Key },
}

impl Target {
    fn parse(raw: &str) -> Result<Target, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(
                "empty; use s3://bucket/prefix, gs://, az://, file:///dir or a directory".into(),
            );
        }
        if !raw.contains("://") {
            // A directory, relative to the working directory.
            let dir = std::path::absolute(raw).map_err(|e| e.to_string())?;
            return Ok(Target::Local(dir));
        }
        let url = url::Url::parse(raw).map_err(|e| e.to_string())?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "credentials do not belong in the URL: set them in the environment (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT_KEY, ...)"
                    .into(),
            );
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("a query or fragment is not part of a store's URL".into());
        }
        match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|_| "a file URL needs an absolute path: file:///dir".to_string())?;
                Ok(Target::Local(dir))
            }
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" => {
                if url.host_str().unwrap_or_default().is_empty() {
                    return Err(format!("{}:// needs a bucket or container", url.scheme()));
                }
                let prefix = Key::parse(url.path().trim_matches('/'))
                    .map_err(|e| format!("the prefix: {e}"))?;
                Ok(Target::Cloud { url, prefix })
            }
            other => Err(format!(
                "{other}:// is not a store hxjobs knows: use s3://, gs://, az:// or file://"
            )),
        }
    }

    fn shown(&self) -> String {
        match self {
            Target::Local(dir) => url::Url::from_directory_path(dir)
                .map(|u| u.to_string())
                .unwrap_or_else(|_| dir.display().to_string()),
            Target::Cloud { url, .. } => url.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> StorageConfig {
        StorageConfig {
            url: url.into(),
            timeout_secs: 5,
            retries: 0,
        }
    }

    #[test]
    fn urls_are_checked_and_credentials_refused() {
        for bad in [
            "",
            "ftp://host/dir",
            "s3://key:secret@bucket/prefix",
            "s3:///prefix",
            "s3://bucket/p?token=x",
            "file://relative",
        ] {
            let e = Store::open(&cfg(bad)).expect_err(bad).to_string();
            assert!(e.starts_with("storage.url"), "{e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_local_store_puts_gets_lists_and_deletes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = url::Url::from_directory_path(dir.path()).expect("url");
        let store = Store::open(&cfg(url.as_str())).expect("open");
        let day = chrono::NaiveDate::from_ymd_opt(2026, 3, 1).expect("day");
        let key = archive_key(day);
        assert_eq!(
            key,
            "events/event_date=2026-03-01/events-2026-03-01.parquet"
        );
        let stored = store
            .put(&key, Bytes::from_static(b"abc"))
            .await
            .expect("put");
        assert_eq!(stored.size, 3);
        assert_eq!(
            stored.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            store.get(&key).await.expect("get"),
            Bytes::from_static(b"abc")
        );
        let listed = store.list("events").await.expect("list");
        assert_eq!(listed.len(), 1, "no partial key is left: {listed:?}");
        assert_eq!(listed[0].key, key);
        assert!(dir.path().join(&key).is_file());
        assert_eq!(
            store.location(&key),
            dir.path().join(&key).display().to_string()
        );
        assert!(store.probe().await.up);
        store.delete(&key).await.expect("delete");
        store.delete(&key).await.expect("twice");
        assert!(matches!(store.get(&key).await, Err(Error::NotFound { .. })));
        assert_eq!(store.size(&key).await.expect("head"), None);
    }
}
