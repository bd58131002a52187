//! Integration tests of the projections crate: every test runs against the embedded event log
//! and both read-store backends (SQLite and a fresh Postgres database).

mod control;
mod health;
mod helpers;
mod ledger;
mod rebuild;
mod requests;
mod runner;
mod store;
mod zones;
