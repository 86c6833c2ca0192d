//! One fallback deployment: sites, committee and aggregator keys derived from a seed drawn
//! from the OS (the load generator and its aggregator process agree on them through it), the
//! consortium view the server runs under, and the round setup every party derives.
//!
//! The consortium manifest of `amalgam-proto` caps a consortium at 255 sites (masking's Shamir
//! shares live in GF(256)); the fallback has no such bound (`amalgam_he::params::MAX_SITES`).
//! Up to 255 sites the server runs under the real [`StaticConsortium`]; above, under
//! [`ScaleView`], a bench-only view that lists every site key for authentication and roles
//! and gives the masking side (which the fallback never reads) a placeholder manifest.

use std::collections::HashMap;
use std::sync::Arc;

use amalgam_he::decryptor::member_secrets_from_bytes;
use amalgam_he::{Committee, KaheParams, MemberSecrets, RoundSetup, SiteDirectory};
use amalgam_proto::{Manifest, RoundParams, SiteId};
use amalgam_server::consortium::{ConsortiumView, DeadlineBounds, MemberRole, StaticConsortium};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{CORRUPT, MEMBERS, MODEL, PIECE_THRESHOLD, QUORUM};

/// Sites of the placeholder masking consortium (the aborted round the fallback re-runs).
const MASKING_SITES: u16 = 5;

fn derive(seed: &[u8; 32], label: &[u8], index: u64) -> Zeroizing<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(b"amalgam/v1/bench/fallback/");
    h.update(label);
    h.update(index.to_be_bytes());
    h.update(seed);
    Zeroizing::new(h.finalize().into())
}

/// The consortium view above 255 sites (bench only): every site key with its index, the
/// committee's identity keys, and a placeholder masking side.
#[derive(Debug)]
pub struct ScaleView {
    digest: [u8; 32],
    sites: HashMap<[u8; 32], SiteId>,
    keys: Vec<[u8; 32]>,
    decryptors: Vec<VerifyingKey>,
    masking: Arc<StaticConsortium>,
}

impl ConsortiumView for ScaleView {
    fn consortium_digest(&self) -> [u8; 32] {
        self.digest
    }
    fn epoch(&self) -> u64 {
        1
    }
    fn proto_manifest(&self) -> Manifest {
        self.masking.manifest.clone()
    }
    fn round_params(&self, round: u64) -> Result<RoundParams, String> {
        self.masking.round_params(round)
    }
    fn context_digest(&self, model_digest: &[u8; 32]) -> [u8; 32] {
        self.masking.context_digest(model_digest)
    }
    fn role_of(&self, key: &[u8; 32]) -> Option<MemberRole> {
        if let Some(id) = self.sites.get(key) {
            return Some(MemberRole::Site(*id));
        }
        self.decryptors
            .iter()
            .any(|d| d.as_bytes() == key)
            .then_some(MemberRole::Decryptor)
    }
    fn member_keys(&self) -> Vec<[u8; 32]> {
        self.keys
            .iter()
            .copied()
            .chain(self.decryptors.iter().map(VerifyingKey::to_bytes))
            .collect()
    }
    fn deadline_bounds(&self) -> DeadlineBounds {
        self.masking.bounds
    }
}

/// A fallback deployment of `n` sites with `values`-long updates of `input_bits` bits.
pub struct FbDeployment {
    /// The seed everything derives from.
    pub seed: [u8; 32],
    /// Site identity keys, index order.
    pub sites: Vec<SigningKey>,
    /// The aggregator's identity key (its TLS certificate is bound to it).
    pub agg: SigningKey,
    /// What the fallback routes and the TLS verifier run under.
    pub view: Arc<dyn ConsortiumView>,
    /// The placeholder masking consortium (the aborted round 1 that is re-run).
    pub masking: Arc<StaticConsortium>,
    /// The setup of [`super::ROUND`], derived once.
    pub setup: RoundSetup,
    member_seeds: Vec<MemberSeeds>,
}

impl FbDeployment {
    /// The deployment derived from `seed`. Panics on parameters the fallback refuses.
    pub fn new(n: usize, values: u32, input_bits: u32, seed: [u8; 32]) -> Self {
        let key = |label: &[u8], i: usize| SigningKey::from_bytes(&derive(&seed, label, i as u64));
        let sites: Vec<SigningKey> = (0..n).map(|i| key(b"site", i)).collect();
        let member_seeds: Vec<_> = (0..MEMBERS)
            .map(|j| {
                (
                    derive(&seed, b"member-identity", j as u64),
                    derive(&seed, b"member-box", j as u64),
                )
            })
            .collect();
        let decryptors: Vec<VerifyingKey> = member_seeds
            .iter()
            .map(|(i, _)| SigningKey::from_bytes(i).verifying_key())
            .collect();
        let digest = *derive(&seed, b"consortium", 0);
        let bounds = DeadlineBounds {
            min_s: 1,
            max_s: 3600,
        };
        let masking_keys: Vec<VerifyingKey> = (0..usize::from(MASKING_SITES))
            .map(|i| key(b"masking-site", i).verifying_key())
            .collect();
        let masking = Arc::new(StaticConsortium {
            digest,
            epoch: 1,
            manifest: Manifest::new(masking_keys)
                .unwrap_or_else(|e| panic!("placeholder manifest: {e}")),
            params: RoundParams::exact(MASKING_SITES, 4, 16, 64)
                .unwrap_or_else(|e| panic!("placeholder parameters: {e}")),
            decryptors: decryptors.clone(),
            bounds,
        });
        let site_keys: Vec<VerifyingKey> = sites.iter().map(SigningKey::verifying_key).collect();
        let view: Arc<dyn ConsortiumView> = if n <= usize::from(amalgam_proto::params::MAX_SITES) {
            Arc::new(StaticConsortium {
                manifest: Manifest::new(site_keys.clone())
                    .unwrap_or_else(|e| panic!("manifest: {e}")),
                ..(*masking).clone()
            })
        } else {
            Arc::new(ScaleView {
                digest,
                sites: site_keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (k.to_bytes(), SiteId(i as u16)))
                    .collect(),
                keys: site_keys.iter().map(VerifyingKey::to_bytes).collect(),
                decryptors,
                masking: masking.clone(),
            })
        };
        let setup = make_setup(&member_seeds, values, input_bits, &site_keys)
            .unwrap_or_else(|e| panic!("fallback setup: {e}"));
        Self {
            seed,
            sites,
            agg: key(b"aggregator", 0),
            view,
            masking,
            setup,
            member_seeds,
        }
    }

    /// Number of sites.
    pub fn n(&self) -> usize {
        self.sites.len()
    }

    /// Committee member `j`'s secrets (identity and box secret of key period 1).
    pub fn secrets(&self, j: usize) -> MemberSecrets {
        secrets_of(&self.member_seeds[j])
    }

    /// Committee member `j`'s identity key (its TLS client certificate).
    pub fn member_key(&self, j: usize) -> SigningKey {
        self.secrets(j).identity
    }

    /// The server's setups: the round's, derived once; any other round id is refused.
    pub fn setups(&self) -> amalgam_server::fallback::StaticFallback {
        let setup = self.setup.clone();
        amalgam_server::fallback::StaticFallback {
            allowed: true,
            make: Box::new(move |r| {
                if r == setup.round() {
                    Ok(setup.clone())
                } else {
                    Err(format!("no fallback round {r} in this deployment"))
                }
            }),
            // The cohort closes as the last site's upload is accepted.
            target: Some(self.n()),
        }
    }
}

type MemberSeeds = (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>);

fn secrets_of((identity, box_secret): &MemberSeeds) -> MemberSecrets {
    member_secrets_from_bytes(**identity, **box_secret)
}

/// The setup of [`super::ROUND`] every party derives: the committee's certified box keys of
/// key period 1, the site directory, the KAHE parameters, a minimum cohort of half the sites.
fn make_setup(
    members: &[MemberSeeds],
    values: u32,
    input_bits: u32,
    site_keys: &[VerifyingKey],
) -> Result<RoundSetup, String> {
    let keys = members.iter().map(|m| secrets_of(m).certify(1)).collect();
    let committee =
        Committee::new(keys, PIECE_THRESHOLD, QUORUM, CORRUPT).map_err(|e| e.to_string())?;
    let dir = SiteDirectory::new(site_keys.to_vec()).map_err(|e| e.to_string())?;
    let n = site_keys.len();
    let params = KaheParams::new(input_bits, n as u32, values).map_err(|e| e.to_string())?;
    RoundSetup::new(
        params,
        dir,
        committee,
        (n / 2).max(2),
        super::ROUND,
        vec![MODEL],
    )
    .map_err(|e| e.to_string())
}
