-- Generated reports. `path` is the file's name inside reports.output_dir.
CREATE TABLE reports (
    id           bigserial   PRIMARY KEY,
    report_type  text        NOT NULL,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    format       text        NOT NULL CHECK (format IN ('pdf', 'json', 'csv')),
    status       text        NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    path         text,
    size         bigint,
    sha256       text,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX reports_type_created ON reports (report_type, created_at);
