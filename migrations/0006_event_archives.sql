-- Raw event days archived by retention: one verified Parquet file per day.
CREATE TABLE event_archives (
    day         date        PRIMARY KEY,
    path        text        NOT NULL,
    rows        bigint      NOT NULL,
    checksum    bigint      NOT NULL,
    bytes       bigint      NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    restored_at timestamptz
);
