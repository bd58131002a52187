//! Thin handlers: extract, call one domain function, answer.

pub mod context;
pub mod gemini;
pub mod messages;
pub mod models;
pub mod proxy;
