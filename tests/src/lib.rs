//! Cross-crate and end-to-end tests live under `tests/tests/`; this library is empty on purpose.
