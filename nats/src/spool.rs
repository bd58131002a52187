//! Local durable spool for the JetStream backend (in progress).
