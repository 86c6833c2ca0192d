//! amalgam-proto (under construction).
