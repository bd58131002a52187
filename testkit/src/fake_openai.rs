//! fake_openai (in progress).
