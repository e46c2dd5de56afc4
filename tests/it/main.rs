//! Integration tests against the real PostgreSQL and Kafka-compatible broker
//! that `scripts/services.sh up` starts (or those named by `DATABASE_URL`
//! and `KAFKA_BOOTSTRAP_SERVERS`). Every test has its own database, topics
//! and consumer group.

mod access;
mod api;
mod browser;
mod checks;
mod cli;
mod common;
mod complete;
mod controls;
mod daemon;
mod dag;
mod dashboards;
mod dependencies;
mod http;
mod ingest;
mod logs;
mod notify;
mod operator;
mod proxy;
mod reports;
mod retention;
mod rollup;
mod scaleout;
mod scheduler;
mod storage;
mod trigger;
mod ui;
mod views;
