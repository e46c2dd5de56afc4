//! One batch as the consumer builds it: encoded rows, dead letters, the
//! offsets it advances and the gaps it saw. A batch is written whole or
//! not at all.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::NaiveDate;
use uuid::Uuid;

use super::copy::CopyBuffer;
use crate::events::{self, Rejection};
use crate::rollup::stage::Staged;

/// A partition being drained; its index in the drain's list is its id in a batch.
#[derive(Debug, Clone)]
pub struct PartitionState {
    pub topic: String,
    pub partition: i32,
    /// The next offset to store; what PostgreSQL holds after the last written batch.
    pub next: i64,
    /// The broker's end as last read: a drain ends here; a continuous
    /// worker expects data while it is ahead of `next`.
    pub end: i64,
    /// The lease epoch this partition is read under.
    pub epoch: i64,
}

impl PartitionState {
    pub fn done(&self) -> bool {
        self.next >= self.end
    }
}

#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub partition_idx: usize,
    pub offset: i64,
    pub rejection: Rejection,
    pub payload: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub partition_idx: usize,
    /// The first missing offset.
    pub from: i64,
    /// The first offset received after the gap (exclusive end).
    pub to: i64,
}

impl Batch {
    /// The partition index `idx` stands for in this batch.
    pub fn part(&self, idx: usize) -> Option<&PartRef> {
        self.parts.get(&idx)
    }
}

/// Which partition (and lease epoch) a batch's partition index stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRef {
    pub topic: String,
    pub partition: i32,
    pub epoch: i64,
}

/// Per-topic counts of one batch or a whole drain, by topic name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicCounts {
    pub stored: u64,
    pub duplicates: u64,
    pub dead_letters: u64,
    pub gaps: u64,
    pub skipped_offsets: u64,
}

impl TopicCounts {
    pub fn add(&mut self, other: &TopicCounts) {
        self.stored += other.stored;
        self.duplicates += other.duplicates;
        self.dead_letters += other.dead_letters;
        self.gaps += other.gaps;
        self.skipped_offsets += other.skipped_offsets;
    }
}

#[derive(Debug)]
pub struct Batch {
    pub rows: CopyBuffer,
    /// The same events' rollup columns, by hour.
    pub stage: Staged,
    /// Rows per partition index, in the COPY stream.
    pub rows_by_partition: BTreeMap<usize, u64>,
    /// Duplicates dropped inside this batch, per partition index.
    pub batch_duplicates: BTreeMap<usize, u64>,
    pub days: BTreeSet<NaiveDate>,
    keys: HashSet<(NaiveDate, Uuid)>,
    pub dead: Vec<DeadLetter>,
    /// partition index → (offset before this batch, offset after it).
    pub advances: BTreeMap<usize, (i64, i64)>,
    /// partition index → the partition it stands for.
    pub parts: BTreeMap<usize, PartRef>,
    pub gaps: Vec<Gap>,
    pub messages: u64,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    pub fn new() -> Self {
        Batch {
            rows: CopyBuffer::new(),
            stage: Staged::default(),
            rows_by_partition: BTreeMap::new(),
            batch_duplicates: BTreeMap::new(),
            days: BTreeSet::new(),
            keys: HashSet::new(),
            dead: Vec::new(),
            advances: BTreeMap::new(),
            parts: BTreeMap::new(),
            gaps: Vec::new(),
            messages: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.advances.is_empty()
    }

    /// Takes one message of partition `idx` at `offset`. Returns `false` when
    /// the offset was already stored (a re-delivery), which is then skipped.
    pub fn take(
        &mut self,
        state: &mut PartitionState,
        idx: usize,
        offset: i64,
        payload: Option<&[u8]>,
        max_event_bytes: usize,
    ) -> bool {
        if offset < state.next {
            return false;
        }
        if offset > state.next {
            self.gaps.push(Gap {
                partition_idx: idx,
                from: state.next,
                to: offset,
            });
        }
        self.messages += 1;
        match events::parse(payload, max_event_bytes) {
            Ok(event) => {
                if self.keys.insert((event.day(), event.event_id)) {
                    self.days.insert(event.day());
                    self.rows
                        .push(&event, &state.topic, state.partition, offset);
                    self.stage.push(&event);
                    *self.rows_by_partition.entry(idx).or_default() += 1;
                } else {
                    *self.batch_duplicates.entry(idx).or_default() += 1;
                }
            }
            Err(rejection) => self.dead.push(DeadLetter {
                partition_idx: idx,
                offset,
                rejection,
                payload: payload.map(<[u8]>::to_vec),
            }),
        }
        let prev = state.next;
        self.advances
            .entry(idx)
            .or_insert_with(|| {
                self.parts.insert(
                    idx,
                    PartRef {
                        topic: state.topic.clone(),
                        partition: state.partition,
                        epoch: state.epoch,
                    },
                );
                (prev, prev)
            })
            .1 = offset + 1;
        state.next = offset + 1;
        true
    }

    pub fn len(&self) -> usize {
        self.rows.rows() + self.dead.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> PartitionState {
        PartitionState {
            topic: "t".into(),
            partition: 0,
            next: 5,
            end: 10,
            epoch: 1,
        }
    }

    fn event(id: &str) -> Vec<u8> {
        format!(
            r#"{{"event_id":"{id}","event_type":"error_event","timestamp":"2026-01-01T00:00:00Z","source":"s","data":{{}}}}"#
        )
        .into_bytes()
    }

    const A: &str = "00000000-0000-4000-8000-000000000001";
    const B: &str = "00000000-0000-4000-8000-000000000002";

    #[test]
    fn advances_offsets_and_records_gaps() {
        let mut s = state();
        let mut b = Batch::new();
        assert!(b.take(&mut s, 0, 5, Some(&event(A)), 1024));
        assert!(b.take(&mut s, 0, 8, Some(&event(B)), 1024));
        assert_eq!(
            b.gaps,
            vec![Gap {
                partition_idx: 0,
                from: 6,
                to: 8
            }]
        );
        assert_eq!(b.advances.get(&0), Some(&(5, 9)));
        assert_eq!(s.next, 9);
        assert!(
            !b.take(&mut s, 0, 7, Some(&event(B)), 1024),
            "re-delivery skipped"
        );
        assert_eq!(b.rows.rows(), 2);
        assert!(!s.done());
    }

    #[test]
    fn duplicates_and_dead_letters() {
        let mut s = state();
        let mut b = Batch::new();
        b.take(&mut s, 0, 5, Some(&event(A)), 1024);
        b.take(&mut s, 0, 6, Some(&event(A)), 1024);
        b.take(&mut s, 0, 7, Some(b"garbage"), 1024);
        b.take(&mut s, 0, 8, None, 1024);
        assert_eq!(b.rows.rows(), 1);
        assert_eq!(b.batch_duplicates.get(&0), Some(&1));
        assert_eq!(b.dead.len(), 2);
        assert_eq!(b.dead[1].payload, None);
        assert_eq!(b.messages, 4);
        assert_eq!(b.advances.get(&0), Some(&(5, 9)));
    }
}
