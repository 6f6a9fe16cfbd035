//! The bench's own issuer: one key per algorithm family (generated once, kept under
//! `target/bench/`), its JWKS, and pools of tokens written one per line for wrk's Lua script.
//!
//! Tokens are signed with the same crates the filter verifies with (jwt-compact 0.8 with
//! `rsa`, `p256`, `ed25519-compact`). Pools are cached next to the keys, because RSA signing
//! in a debug build of xtask is slow and the pools do not change between runs.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{Duration, Utc};
use jwt_compact::alg::{
    Ed25519, Es256, Hs256, Hs256Key, ModulusBits, Rsa, RsaPrivateKey, RsaPublicKey,
};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt, Claims, Header};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The issuer every bench token names (`envoy/bench/*.yaml` trust it).
pub const ISSUER: &str = "bench";
/// Their audience.
pub const AUDIENCE: &str = "workspace-api";
/// The organization every bench user belongs to (as owner) and calls home (`company`).
pub const ORG: &str = "a1b2c3d4-5678-90ef-1234-567890abcdef";
/// Lifetime of bench tokens; `envoy/bench/wasm.yaml` allows up to 720 h.
const TOKEN_TTL_HOURS: i64 = 24 * 29;
/// A cached pool is re-minted when it has less than this left.
const MIN_REMAINING_HOURS: i64 = 24;

/// The signature algorithm families of scenario (4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    /// HMAC with SHA-256.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256, 2048-bit key.
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

impl Family {
    /// Every family, in table order.
    pub const ALL: [Family; 4] = [Self::HS256, Self::RS256, Self::ES256, Self::EdDSA];

    /// The JOSE `alg` name.
    pub fn alg(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }

    fn kid(self) -> String {
        format!("bench-{}", self.alg().to_ascii_lowercase())
    }
}

/// The private keys of the bench issuer.
pub struct Keys {
    hs: Hs256Key,
    rs: RsaPrivateKey,
    es: p256::ecdsa::SigningKey,
    ed: ed25519_compact::SecretKey,
    fingerprint: String,
}

#[derive(Serialize, Deserialize)]
struct StoredKeys {
    hs256: Value,
    rs256: Value,
    es256: Value,
    eddsa: Value,
}

fn jwk_value(jwk: JsonWebKey<'_>) -> Result<Value> {
    serde_json::to_value(&jwk).context("serializing a JWK")
}

fn from_jwk<T>(value: &Value, what: &str) -> Result<T>
where
    T: for<'a, 'b> TryFrom<&'a JsonWebKey<'b>>,
    for<'a, 'b> <T as TryFrom<&'a JsonWebKey<'b>>>::Error: std::fmt::Display,
{
    let jwk: JsonWebKey<'_> =
        serde_json::from_value(value.clone()).with_context(|| format!("{what}: not a JWK"))?;
    T::try_from(&jwk).map_err(|e| anyhow!("{what}: {e}"))
}

impl Keys {
    /// Loads the keys from `path`, generating and saving them on first use.
    pub fn load_or_generate(path: &Path) -> Result<Self> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(_) => {
                eprintln!("xtask bench: generating the bench issuer's keys (once)");
                let mut rng = rand_core::OsRng;
                let hs = Hs256Key::generate(&mut rng).into_inner();
                let rs = Rsa::generate(&mut rng, ModulusBits::TwoKibibytes)
                    .map_err(|e| anyhow!("generating an RSA key: {e}"))?
                    .0
                    .into_inner();
                let es = p256::ecdsa::SigningKey::random(&mut rng);
                let ed = ed25519_compact::KeyPair::generate().sk;
                let stored = StoredKeys {
                    hs256: jwk_value(JsonWebKey::from(&hs))?,
                    rs256: jwk_value(JsonWebKey::from(&rs))?,
                    es256: jwk_value(JsonWebKey::from(&es))?,
                    eddsa: jwk_value(JsonWebKey::from(&ed))?,
                };
                let text = serde_json::to_string_pretty(&stored)?;
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir)?;
                }
                fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
                text
            }
        };
        let stored: StoredKeys =
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        let fingerprint = short_hash(text.as_bytes());
        Ok(Self {
            hs: from_jwk(&stored.hs256, "hs256")?,
            rs: from_jwk(&stored.rs256, "rs256")?,
            es: from_jwk(&stored.es256, "es256")?,
            ed: from_jwk(&stored.eddsa, "eddsa")?,
            fingerprint,
        })
    }

    /// The public JWKS for `families` (an `oct` key for HS256: the filter's JWKS holds the
    /// shared secret, as HS256 requires).
    pub fn jwks(&self, families: &[Family]) -> Result<Value> {
        let mut keys = Vec::new();
        for &family in families {
            let mut jwk = match family {
                Family::HS256 => jwk_value(JsonWebKey::from(&self.hs))?,
                Family::RS256 => {
                    let public: RsaPublicKey = self.rs.to_public_key();
                    jwk_value(JsonWebKey::from(&public))?
                }
                Family::ES256 => {
                    let public = *self.es.verifying_key();
                    jwk_value(JsonWebKey::from(&public))?
                }
                Family::EdDSA => jwk_value(JsonWebKey::from(&self.ed.public_key()))?,
            };
            if let Value::Object(map) = &mut jwk {
                map.insert("kid".into(), family.kid().into());
                map.insert("alg".into(), family.alg().into());
                map.insert("use".into(), "sig".into());
            }
            keys.push(jwk);
        }
        Ok(json!({ "keys": keys }))
    }

    /// One token for `sub` signed with `family`'s key; `jti` makes otherwise equal tokens
    /// distinct.
    pub fn mint(&self, family: Family, sub: &str, jti: &str) -> Result<String> {
        let now = Utc::now();
        let mut custom = Map::new();
        custom.insert("iss".into(), ISSUER.into());
        custom.insert("aud".into(), AUDIENCE.into());
        custom.insert("sub".into(), sub.into());
        custom.insert("jti".into(), jti.into());
        custom.insert("email".into(), format!("{sub}@bench.local").into());
        custom.insert("email_verified".into(), true.into());
        custom.insert("orgs".into(), json!({ ORG: ["owner"] }));
        custom.insert("perms".into(), json!([]));
        custom.insert("company".into(), ORG.into());
        let mut claims = Claims::new(custom);
        claims.issued_at = Some(now);
        claims.not_before = Some(now);
        claims.expiration = Some(now + Duration::hours(TOKEN_TTL_HOURS));
        let header = Header::empty()
            .with_key_id(family.kid())
            .with_token_type("JWT");
        let token = match family {
            Family::HS256 => Hs256.token(&header, &claims, &self.hs),
            Family::RS256 => Rsa::rs256().token(&header, &claims, &self.rs),
            Family::ES256 => Es256.token(&header, &claims, &self.es),
            Family::EdDSA => Ed25519.token(&header, &claims, &self.ed),
        };
        token.map_err(|e| anyhow!("signing a {} token: {e}", family.alg()))
    }
}

/// A pool of tokens split into one file per wrk thread: `<prefix>.<thread>.txt`.
#[derive(Debug, Clone)]
pub struct Pool {
    /// The files' common prefix (passed to the Lua script).
    pub prefix: PathBuf,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct PoolManifest {
    keys: String,
    family: Family,
    tokens: u64,
    threads: u32,
    distinct_users: bool,
    expires: i64,
}

/// What a pool holds.
#[derive(Debug, Clone, Copy)]
pub struct PoolSpec {
    /// Signing family.
    pub family: Family,
    /// Number of distinct tokens (1: the same token on every request).
    pub tokens: u64,
    /// One wrk thread reads one file.
    pub threads: u32,
    /// Each token a different subject (`u-bench-<n>`), else all `u-bench`.
    pub distinct_users: bool,
}

/// Writes (or reuses) the pool `name` under `dir`.
pub fn pool(keys: &Keys, dir: &Path, name: &str, spec: PoolSpec) -> Result<Pool> {
    let prefix = dir.join(name);
    let manifest_path = dir.join(format!("{name}.manifest.json"));
    let now = Utc::now().timestamp();
    let fresh = fs::read_to_string(&manifest_path)
        .ok()
        .and_then(|t| serde_json::from_str::<PoolManifest>(&t).ok())
        .is_some_and(|m| {
            m.keys == keys.fingerprint
                && m.family == spec.family
                && m.tokens == spec.tokens
                && m.threads == spec.threads
                && m.distinct_users == spec.distinct_users
                && m.expires - now > MIN_REMAINING_HOURS * 3600
                && (0..spec.threads).all(|t| pool_file(&prefix, t).exists())
        });
    if fresh {
        return Ok(Pool { prefix });
    }
    fs::create_dir_all(dir)?;
    let _ = fs::remove_file(&manifest_path);
    if spec.tokens > 1 {
        eprintln!(
            "xtask bench: minting {} {} tokens ({name})",
            spec.tokens,
            spec.family.alg()
        );
    }
    if spec.threads == 0 {
        bail!("a pool needs at least one thread");
    }
    let threads = u64::from(spec.threads);
    std::thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::new();
        for t in 0..threads {
            let prefix = &prefix;
            handles.push(scope.spawn(move || -> Result<()> {
                let path = pool_file(prefix, t as u32);
                let mut out = BufWriter::new(
                    fs::File::create(&path)
                        .with_context(|| format!("creating {}", path.display()))?,
                );
                if spec.tokens == 1 {
                    // The same token in every thread's file: the cached path.
                    writeln!(out, "{}", keys.mint(spec.family, "u-bench", "cached")?)?;
                } else {
                    // Thread t takes tokens t, t + threads, t + 2·threads, …
                    let mut n = t;
                    while n < spec.tokens {
                        let sub = if spec.distinct_users {
                            format!("u-bench-{n}")
                        } else {
                            "u-bench".to_owned()
                        };
                        writeln!(out, "{}", keys.mint(spec.family, &sub, &format!("j-{n}"))?)?;
                        n += threads;
                    }
                }
                out.flush()?;
                Ok(())
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow!("a minting thread panicked"))??;
        }
        Ok(())
    })?;
    let manifest = PoolManifest {
        keys: keys.fingerprint.clone(),
        family: spec.family,
        tokens: spec.tokens,
        threads: spec.threads,
        distinct_users: spec.distinct_users,
        expires: now + TOKEN_TTL_HOURS * 3600,
    };
    fs::write(&manifest_path, serde_json::to_vec(&manifest)?)?;
    Ok(Pool { prefix })
}

fn pool_file(prefix: &Path, thread: u32) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(format!(".{thread}.txt"));
    PathBuf::from(name)
}

/// The first line of a pool (a sample token for sanity checks).
pub fn first_token(pool: &Pool) -> Result<String> {
    let text = fs::read_to_string(pool_file(&pool.prefix, 0))?;
    text.lines()
        .next()
        .map(str::to_owned)
        .context("empty token pool")
}

fn short_hash(bytes: &[u8]) -> String {
    // FNV-1a: enough to tell key files apart, no cryptography needed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
