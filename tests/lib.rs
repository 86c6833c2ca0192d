//! Shared harness for Amalgam's cross-crate tests and fuzz targets.
