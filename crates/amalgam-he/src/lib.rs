//! amalgam-he (under construction).
