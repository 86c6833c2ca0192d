//! amalgam-dp (under construction).
