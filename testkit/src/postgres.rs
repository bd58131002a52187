//! postgres (in progress).
