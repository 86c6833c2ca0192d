//! The decryptor committee and its replicated additive sharing (spec he-fallback.md §5).
//!
//! A site's round key is the sum of one piece per (t_c − 1)-subset T of the c members; piece T is
//! held by every member outside T. Any t_c members hold every piece (no t_c-set fits inside a
//! (t_c − 1)-subset); any t_c − 1 members miss the piece of their own subset, which is uniform and
//! hides the key. Release needs Q signatures on one cohort statement with 2Q − c > c_d, so two
//! quorums share an honest member, who signs only one statement per round.

use amalgam_proto::codec::{Encode, Writer};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use x25519_dalek::{PublicKey as BoxPublic, StaticSecret};

use crate::error::HeError;

/// Largest committee (C(8, 4) = 70 pieces at most).
pub const MAX_MEMBERS: usize = 8;

/// Domain label of a box-key certificate.
const BOX_KEY_LABEL: &[u8] = b"amalgam/v2/he-box-key";

/// A member's per-key-period box key, signed by its identity key: sites encrypt seeds to it,
/// and the member destroys it after the deadline of every round that used it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberKeys {
    /// Long-term Ed25519 identity (pinned in the consortium configuration).
    pub identity: VerifyingKey,
    /// Key period the box key belongs to.
    pub period: u64,
    /// X25519 box key of that period.
    pub box_key: [u8; 32],
    /// Identity signature over (label, period, box key).
    pub certificate: [u8; 64],
}

fn box_key_message(period: u64, box_key: &[u8; 32]) -> Vec<u8> {
    let mut m = BOX_KEY_LABEL.to_vec();
    m.extend_from_slice(&period.to_be_bytes());
    m.extend_from_slice(box_key);
    m
}

impl MemberKeys {
    /// Certifies the box key of `secret` for `period` under `identity`.
    pub fn certify(identity: &SigningKey, period: u64, secret: &StaticSecret) -> Self {
        let box_key = BoxPublic::from(secret).to_bytes();
        let certificate = identity.sign(&box_key_message(period, &box_key)).to_bytes();
        Self {
            identity: identity.verifying_key(),
            period,
            box_key,
            certificate,
        }
    }

    fn verify(&self) -> bool {
        self.identity
            .verify_strict(
                &box_key_message(self.period, &self.box_key),
                &Signature::from_bytes(&self.certificate),
            )
            .is_ok()
    }
}

/// A validated committee: members, piece threshold t_c, signature quorum Q, corrupt members
/// tolerated c_d.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committee {
    members: Vec<MemberKeys>,
    threshold: usize,
    quorum: usize,
    corrupt: usize,
    /// Piece p = the p-th (t_c − 1)-subset in lexicographic order (members excluded).
    pieces: Vec<Vec<usize>>,
}

fn subsets(c: usize, k: usize) -> Vec<Vec<usize>> {
    fn rec(start: usize, c: usize, k: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..c {
            cur.push(i);
            rec(i + 1, c, k, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    rec(0, c, k, &mut Vec::new(), &mut out);
    out
}

impl Committee {
    /// Validates the committee: `1 ≤ c ≤ 8`, `1 ≤ t_c ≤ c` with `t_c ≥ 2` unless c = 1 (with
    /// t_c = 1 there is one piece and every member holds it, so any one member opens every
    /// key: a committee of c > 1 would only pretend to split trust), `1 ≤ Q ≤ c`, `c_d < t_c` (pieces stay
    /// secret), `2Q − c > c_d` (no two quorums without an honest common member), distinct
    /// identities, box-key certificates that verify.
    pub fn new(
        members: Vec<MemberKeys>,
        threshold: usize,
        quorum: usize,
        corrupt: usize,
    ) -> Result<Self, HeError> {
        let c = members.len();
        let fail = |rule| HeError::CommitteeRule {
            c,
            t: threshold,
            q: quorum,
            corrupt,
            rule,
        };
        if !(1..=MAX_MEMBERS).contains(&c) {
            return Err(fail("committee size must be 1..=8"));
        }
        if !(1..=c).contains(&threshold) {
            return Err(fail("t_c must be 1..=c"));
        }
        if threshold < 2 && c > 1 {
            return Err(fail(
                "t_c ≥ 2 is required when c > 1: with t_c = 1 every member holds every piece",
            ));
        }
        if !(1..=c).contains(&quorum) {
            return Err(fail("Q must be 1..=c"));
        }
        if corrupt >= threshold {
            return Err(fail(
                "c_d < t_c is required: c_d members would hold every piece",
            ));
        }
        if 2 * quorum <= c + corrupt {
            return Err(fail(
                "2Q − c > c_d is required: two quorums could sign two cohorts",
            ));
        }
        for (index, m) in members.iter().enumerate() {
            if m.identity.is_weak() || members[..index].iter().any(|o| o.identity == m.identity) {
                return Err(HeError::BadKey {
                    what: "committee",
                    index,
                    reason: "weak or a duplicate",
                });
            }
            if !m.verify() {
                return Err(HeError::BadKey {
                    what: "committee",
                    index,
                    reason: "not certified by its identity",
                });
            }
        }
        let pieces = subsets(c, threshold - 1);
        Ok(Self {
            members,
            threshold,
            quorum,
            corrupt,
            pieces,
        })
    }

    /// Committee size c.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Piece threshold t_c.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Signature quorum Q.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// Corrupt members tolerated c_d.
    pub fn corrupt(&self) -> usize {
        self.corrupt
    }

    /// Members that may drop out with the round still completing: c − max(Q, t_c).
    pub fn dropouts_tolerated(&self) -> usize {
        self.size() - self.quorum.max(self.threshold)
    }

    /// Number of pieces C(c, t_c − 1).
    pub fn pieces(&self) -> usize {
        self.pieces.len()
    }

    /// A member's keys.
    pub fn member(&self, index: usize) -> Result<&MemberKeys, HeError> {
        self.members
            .get(index)
            .ok_or(HeError::UnknownMember { member: index })
    }

    /// Whether `member` holds `piece` (it is outside the piece's subset).
    pub fn holds(&self, member: usize, piece: usize) -> bool {
        member < self.size() && self.pieces.get(piece).is_some_and(|t| !t.contains(&member))
    }

    /// The pieces `member` holds, ascending.
    pub fn held_by(&self, member: usize) -> Vec<usize> {
        (0..self.pieces())
            .filter(|&p| self.holds(member, p))
            .collect()
    }
}

impl Encode for Committee {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.size() as u8);
        w.u8(self.threshold as u8);
        w.u8(self.quorum as u8);
        w.u8(self.corrupt as u8);
        for m in &self.members {
            w.bytes(m.identity.as_bytes());
            w.u64(m.period);
            w.bytes(&m.box_key);
            w.bytes(&m.certificate);
        }
    }
}

/// A member's secrets for one key period: identity signing key and box secret (wiped on drop).
pub struct MemberSecrets {
    /// Identity key (signs statements and releases).
    pub identity: SigningKey,
    /// Box secret of the period.
    pub box_secret: StaticSecret,
}

impl core::fmt::Debug for MemberSecrets {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MemberSecrets(..)")
    }
}

impl MemberSecrets {
    /// The public keys a committee configuration lists for this member in key period `period`.
    pub fn certify(&self, period: u64) -> MemberKeys {
        MemberKeys::certify(&self.identity, period, &self.box_secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(c: usize) -> Vec<MemberKeys> {
        (0..c)
            .map(|i| {
                let id = SigningKey::from_bytes(&[i as u8 + 1; 32]);
                MemberKeys::certify(&id, 1, &StaticSecret::from([i as u8 + 50; 32]))
            })
            .collect()
    }

    #[test]
    fn any_t_members_hold_every_piece_and_fewer_miss_one() {
        for (c, t) in [(1, 1), (3, 2), (4, 2), (5, 3), (7, 4), (8, 5)] {
            let com = Committee::new(members(c), t, c, t - 1).unwrap();
            for set in 0u32..(1 << c) {
                let members: Vec<usize> = (0..c).filter(|i| set >> i & 1 == 1).collect();
                let covered = (0..com.pieces()).all(|p| members.iter().any(|&m| com.holds(m, p)));
                assert_eq!(covered, members.len() >= t, "c={c} t={t} set={members:?}");
            }
        }
    }

    #[test]
    fn the_spec_table_rows_are_valid_and_their_figures_hold() {
        // (c, t_c, Q, c_d, dropouts, pieces, held per member), he-fallback.md §2.
        for (c, t, q, cd, drop, pieces, held) in [
            (1, 1, 1, 0, 0, 1, 1),
            (3, 2, 3, 1, 0, 3, 2),
            (4, 2, 3, 1, 1, 4, 3),
            (5, 3, 4, 2, 1, 10, 6),
            (5, 2, 4, 1, 1, 5, 4),
            (7, 4, 6, 3, 1, 35, 20),
            (7, 3, 5, 2, 2, 21, 15),
        ] {
            let com = Committee::new(members(c), t, q, cd).unwrap();
            assert_eq!(com.dropouts_tolerated(), drop);
            assert_eq!(com.pieces(), pieces);
            assert_eq!(com.held_by(0).len(), held);
            assert!(
                Committee::new(members(c), t, q, cd + 1).is_err(),
                "c_d is the maximum"
            );
        }
    }

    #[test]
    fn quorum_rule_and_certificates_are_enforced() {
        assert!(Committee::new(members(5), 3, 4, 2).is_ok());
        assert_eq!(
            Committee::new(members(5), 3, 4, 2)
                .unwrap()
                .dropouts_tolerated(),
            1
        );
        // 2Q − c = 1 is not above c_d = 1.
        assert!(matches!(
            Committee::new(members(5), 3, 3, 1),
            Err(HeError::CommitteeRule { .. })
        ));
        assert!(
            Committee::new(members(5), 3, 4, 3).is_err(),
            "c_d must stay below t_c"
        );
        let mut forged = members(3);
        forged[1].box_key = [9; 32];
        assert!(matches!(
            Committee::new(forged, 2, 3, 1),
            Err(HeError::BadKey { index: 1, .. })
        ));
    }
}
