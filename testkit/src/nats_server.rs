//! nats_server (in progress).
