//! Direct-strategy tests (being written).
