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
/// Domain label of a key-period certificate (a box key scoped to one consortium, one member
/// index and one range of round ids).
const PERIOD_KEY_LABEL: &[u8] = b"amalgam/v2/he-period-key";

/// What a key-period certificate binds besides the period and the box key: the consortium
/// (its manifest digest), the member's committee index and the round ids `first_round ..
/// end_round` the key may serve. A key outside its range is expired or not yet valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeriodScope {
    /// Digest of the signed consortium manifest.
    pub consortium_digest: [u8; 32],
    /// Committee member index.
    pub member: u16,
    /// First round id of the period.
    pub first_round: u64,
    /// First round id after the period.
    pub end_round: u64,
}

impl PeriodScope {
    /// Whether round `round` lies in the period.
    pub fn covers(&self, round: u64) -> bool {
        (self.first_round..self.end_round).contains(&round)
    }
}

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
    /// Identity signature over (label, period, box key), and the scope when there is one.
    pub certificate: [u8; 64],
    /// Consortium, member index and valid rounds the certificate also signs (None: a bare
    /// box-key certificate, for standalone committees without a manifest).
    pub scope: Option<PeriodScope>,
}

fn box_key_message(period: u64, box_key: &[u8; 32], scope: Option<&PeriodScope>) -> Vec<u8> {
    match scope {
        None => {
            let mut m = BOX_KEY_LABEL.to_vec();
            m.extend_from_slice(&period.to_be_bytes());
            m.extend_from_slice(box_key);
            m
        }
        Some(s) => {
            let mut m = PERIOD_KEY_LABEL.to_vec();
            m.extend_from_slice(&s.consortium_digest);
            m.extend_from_slice(&period.to_be_bytes());
            m.extend_from_slice(&s.member.to_be_bytes());
            m.extend_from_slice(&s.first_round.to_be_bytes());
            m.extend_from_slice(&s.end_round.to_be_bytes());
            m.extend_from_slice(box_key);
            m
        }
    }
}

impl MemberKeys {
    /// Certifies the box key of `secret` for `period` under `identity` (no scope).
    pub fn certify(identity: &SigningKey, period: u64, secret: &StaticSecret) -> Self {
        Self::sign(identity, period, BoxPublic::from(secret).to_bytes(), None)
    }

    /// Certifies the box key of `secret` for `period`, scoped to a consortium, a member index
    /// and the period's round ids.
    pub fn certify_period(
        identity: &SigningKey,
        period: u64,
        scope: PeriodScope,
        secret: &StaticSecret,
    ) -> Self {
        Self::sign(
            identity,
            period,
            BoxPublic::from(secret).to_bytes(),
            Some(scope),
        )
    }

    fn sign(
        identity: &SigningKey,
        period: u64,
        box_key: [u8; 32],
        scope: Option<PeriodScope>,
    ) -> Self {
        let certificate = identity
            .sign(&box_key_message(period, &box_key, scope.as_ref()))
            .to_bytes();
        Self {
            identity: identity.verifying_key(),
            period,
            box_key,
            certificate,
            scope,
        }
    }

    /// Whether the certificate is the identity's strict Ed25519 signature over the period,
    /// the box key and the scope.
    pub fn verify(&self) -> bool {
        self.identity
            .verify_strict(
                &box_key_message(self.period, &self.box_key, self.scope.as_ref()),
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
            let reason = match (&m.scope, &members[0].scope) {
                (None, None) => None,
                (Some(s), Some(first)) => {
                    if usize::from(s.member) != index {
                        Some("certified for another member index")
                    } else if s.consortium_digest != first.consortium_digest {
                        Some("certified for another consortium")
                    } else if m.period != members[0].period
                        || (s.first_round, s.end_round) != (first.first_round, first.end_round)
                    {
                        Some("certified for another key period")
                    } else {
                        None
                    }
                }
                _ => Some("scoped and bare certificates mixed"),
            };
            if let Some(reason) = reason {
                return Err(HeError::BadKey {
                    what: "committee",
                    index,
                    reason,
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
            // Scoped committees only (all members or none are): a bare committee's encoding
            // is unchanged, and c fixes where the members end.
            if let Some(s) = &m.scope {
                w.bytes(&s.consortium_digest);
                w.u16(s.member);
                w.u64(s.first_round);
                w.u64(s.end_round);
            }
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

    /// The key-period certificate of this member's box key for `period` and `scope`.
    pub fn certify_period(&self, period: u64, scope: PeriodScope) -> MemberKeys {
        MemberKeys::certify_period(&self.identity, period, scope, &self.box_secret)
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

    fn scoped(c: usize, digest: [u8; 32], period: u64) -> Vec<MemberKeys> {
        (0..c)
            .map(|i| {
                let id = SigningKey::from_bytes(&[i as u8 + 1; 32]);
                let scope = PeriodScope {
                    consortium_digest: digest,
                    member: i as u16,
                    first_round: period * 16,
                    end_round: period * 16 + 16,
                };
                MemberKeys::certify_period(
                    &id,
                    period,
                    scope,
                    &StaticSecret::from([i as u8 + 50; 32]),
                )
            })
            .collect()
    }

    #[test]
    fn scoped_certificates_bind_index_consortium_and_period() {
        assert!(Committee::new(scoped(3, [1; 32], 4), 2, 3, 1).is_ok());
        // The scope is signed: re-labelling it breaks the certificate.
        let mut relabelled = scoped(3, [1; 32], 4);
        relabelled[2].scope.as_mut().unwrap().end_round += 1;
        assert!(matches!(
            Committee::new(relabelled, 2, 3, 1),
            Err(HeError::BadKey {
                index: 2,
                reason: "not certified by its identity",
                ..
            })
        ));
        // Member 1's certificate in member 0's slot (both genuine).
        let mut swapped = scoped(3, [1; 32], 4);
        swapped.swap(0, 1);
        assert!(matches!(
            Committee::new(swapped, 2, 3, 1),
            Err(HeError::BadKey {
                index: 0,
                reason: "certified for another member index",
                ..
            })
        ));
        let mut foreign = scoped(3, [1; 32], 4);
        foreign[1] = scoped(3, [2; 32], 4).remove(1);
        assert!(matches!(
            Committee::new(foreign, 2, 3, 1),
            Err(HeError::BadKey {
                index: 1,
                reason: "certified for another consortium",
                ..
            })
        ));
        let mut stale = scoped(3, [1; 32], 4);
        stale[2] = scoped(3, [1; 32], 3).remove(2);
        assert!(matches!(
            Committee::new(stale, 2, 3, 1),
            Err(HeError::BadKey {
                index: 2,
                reason: "certified for another key period",
                ..
            })
        ));
        let mut mixed = scoped(3, [1; 32], 4);
        mixed[1] = members(3).remove(1);
        assert!(matches!(
            Committee::new(mixed, 2, 3, 1),
            Err(HeError::BadKey {
                index: 1,
                reason: "scoped and bare certificates mixed",
                ..
            })
        ));
        // The scoped encoding differs from the bare one (it carries the scope).
        let a = Committee::new(scoped(3, [1; 32], 4), 2, 3, 1).unwrap();
        let b = Committee::new(scoped(3, [2; 32], 4), 2, 3, 1).unwrap();
        let enc = |c: &Committee| {
            let mut w = Writer::new();
            c.encode(&mut w);
            w.into_bytes()
        };
        assert_ne!(enc(&a), enc(&b));
        assert_eq!(enc(&a).len(), 4 + 3 * (32 + 8 + 32 + 64 + 32 + 2 + 8 + 8));
    }
}
