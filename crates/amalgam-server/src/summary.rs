//! The check every posted ledger summary passes before it is stored, in the masking and the
//! fallback scheme alike: one rule, so the two cannot drift apart.

use amalgam_net::summary::LedgerSummary;
use amalgam_net::{Problem, ProblemCode};
use ed25519_dalek::VerifyingKey;

/// Verifies `bytes` as `site`'s summary of `round`: signed by `key` (the site's manifest
/// key), naming `consortium`, this round and this site, with an entry count not below
/// `min_entries` (the site's previous accepted summary). Changes nothing.
pub(crate) fn check_posted_summary(
    bytes: &[u8],
    key: &VerifyingKey,
    consortium: &[u8; 32],
    round: u64,
    site: u16,
    min_entries: u64,
) -> Result<(), Problem> {
    let invalid = |why: String| Problem::new(ProblemCode::SummaryInvalid, why);
    let s = LedgerSummary::verify(bytes, key).map_err(|e| invalid(e.to_string()))?;
    if s.consortium_digest != *consortium {
        return Err(invalid("the summary names another consortium".into()));
    }
    if s.round != round {
        return Err(invalid(format!(
            "the summary is for round {}, posted to round {round}",
            s.round
        )));
    }
    if s.site != site {
        return Err(invalid("the summary names another site".into()));
    }
    if s.entries < min_entries {
        return Err(Problem::new(
            ProblemCode::SummaryRegressed,
            format!(
                "the summary has {} ledger entries, this site's previous one {min_entries}",
                s.entries
            ),
        ));
    }
    Ok(())
}
