//! Integration tests for Muster; see tests/.
