//! Reading `dead_letters` (rejected input, kept whole) for people: the
//! console's list, newest first.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A rejected message with the first bytes of its payload.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: i64,
    pub kafka_topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub reason: String,
    pub detail: String,
    /// Up to [`PREVIEW_BYTES`] of the raw payload.
    pub head: Option<Vec<u8>>,
    pub size: Option<i32>,
    pub received_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
}

/// How much of a payload a list shows.
pub const PREVIEW_BYTES: i32 = 512;

/// Dead letters newest first, of one reason or all; older than `before`
/// (an id) for the next page.
pub async fn recent(
    pool: &PgPool,
    reason: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as!(
        DeadLetter,
        "SELECT id, kafka_topic, kafka_partition, kafka_offset, reason, detail,
                substring(payload FROM 1 FOR $4) AS head, length(payload) AS size,
                received_at, published_at
         FROM dead_letters
         WHERE ($1::text IS NULL OR reason = $1) AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
        reason,
        before,
        limit,
        PREVIEW_BYTES,
    )
    .fetch_all(pool)
    .await
}

/// Dead letters per reason.
pub async fn reasons(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    Ok(sqlx::query!(
        r#"SELECT reason, count(*) AS "letters!" FROM dead_letters GROUP BY reason ORDER BY reason"#
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.reason, r.letters))
    .collect())
}

/// Bytes as readable text: printable UTF-8 as it is, line ends and tabs
/// as `\n` `\t`, every other byte as `\xNN`. The result is plain text;
/// whoever prints it still escapes it for its medium.
pub fn preview(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preview_is_text_whatever_the_bytes() {
        assert_eq!(
            preview(b"<script>alert(1)</script>\n\xff\x00ok"),
            "<script>alert(1)</script>\\n\\xff\\u{0}ok"
        );
    }
}
