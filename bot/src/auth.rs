//! JWT verification for every gRPC call. A call carries
//! `authorization: Bearer <JWT>`; [`Authenticator`] checks the token against
//! an HS256 secret file (development) or a JWKS file of RSA and P-256 public
//! keys (production) and returns the caller as a [`Principal`].
//!
//! - The algorithm comes from the key, never from the token. An HS256 secret
//!   accepts only HS256; a JWKS key accepts only the algorithm of its type
//!   (RS256 for RSA, ES256 for P-256). `none` and HS* against a JWKS are
//!   refused before any key is touched, so a token signed with the RSA public
//!   key as an HMAC secret gets nowhere.
//! - JWKS tokens name their key with `kid`.
//! - `exp`, `iss`, `aud` and `sub` are required, `nbf` is checked when
//!   present, and `role` defaults to customer.
//! - Every error has a stable [`AuthError::reason`] for
//!   `google.rpc.ErrorInfo`. Messages never repeat any part of the token:
//!   they are logged and sent to clients.
//!
//! [`test_support`] signs tokens with the committed test keys under
//! `tests/fixtures/jwt/`; the service never uses it.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretSlice};
use serde::Deserialize;
use serde_json::Value;

/// The longest bearer token accepted, checked before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The clock-skew leeway callers use unless configured otherwise.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// The largest leeway [`Authenticator::from_config`] accepts.
pub const MAX_LEEWAY_SECS: u64 = 300;
/// The shortest HS256 secret accepted (after trailing whitespace is trimmed).
pub const MIN_SECRET_BYTES: usize = 32;
/// The longest `sub` accepted.
pub const MAX_SUBJECT_BYTES: usize = 128;

const BEARER: &str = "Bearer";
/// The claims `jsonwebtoken` checks for presence before anything else.
const REQUIRED_CLAIMS: [&str; 4] = ["exp", "iss", "aud", "sub"];

/// What the caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Customer,
    Agent,
    Admin,
}

impl Role {
    /// The claim value: `customer`, `agent` or `admin`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }

    /// An absent (or null) `role` is a customer; anything but the three
    /// lowercase names is refused.
    fn from_claim(value: &Value) -> Result<Self, AuthError> {
        match value {
            Value::Null => Ok(Role::Customer),
            Value::String(s) => match s.as_str() {
                "customer" => Ok(Role::Customer),
                "agent" => Ok(Role::Agent),
                "admin" => Ok(Role::Admin),
                _ => Err(AuthError::BadRole),
            },
            _ => Err(AuthError::BadRole),
        }
    }
}

/// The verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`: non-empty, at most [`MAX_SUBJECT_BYTES`], no
    /// control characters.
    pub subject: String,
    pub role: Role,
    /// Agents only: the queues the token allows (`skills` claim); `None`
    /// when the claim is absent (any queue).
    pub skills: Option<Vec<String>>,
}

/// Where the verification keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A JWKS file (`{"keys": [...]}`) of RSA and P-256 EC public keys.
    Jwks(PathBuf),
    /// A file whose bytes, trailing whitespace trimmed, are the HS256 secret.
    Hs256SecretFile(PathBuf),
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub keys: KeySource,
    /// The exact `iss` tokens must carry.
    pub issuer: String,
    /// A value tokens' `aud` (string or array) must contain.
    pub audience: String,
    /// Clock-skew allowance for `exp` and `nbf`, at most [`MAX_LEEWAY_SECS`].
    pub leeway_secs: u64,
}

/// Why a call's credentials were refused. Messages never contain any part of
/// the token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the call has no `authorization` metadata; send `authorization: Bearer <JWT>`")]
    Missing,
    #[error("the bearer token is longer than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the `authorization` metadata is not `Bearer <JWT>`: {problem}")]
    BadHeader { problem: &'static str },
    #[error("the bearer token is not a well-formed JWT: {problem}")]
    Malformed { problem: &'static str },
    #[error("the token's signing algorithm is not accepted here (accepted: {allowed})")]
    AlgorithmNotAllowed { allowed: &'static str },
    #[error("the token header has no `kid`; tokens must name their signing key")]
    MissingKeyId,
    #[error("the token's `kid` names no configured key")]
    UnknownKeyId,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (`nbf` is in the future)")]
    NotYetValid,
    #[error("the token was issued by another issuer (`iss`)")]
    WrongIssuer,
    #[error("the token is not meant for this service (`aud`)")]
    WrongAudience,
    #[error("the token has no usable `{claim}` claim")]
    MissingClaim { claim: &'static str },
    #[error("the token's `{claim}` claim is unusable: {problem}")]
    InvalidClaim {
        claim: &'static str,
        problem: &'static str,
    },
    #[error("the token's `role` claim is not one of customer, agent, admin")]
    BadRole,
}

impl AuthError {
    /// The `google.rpc.ErrorInfo` reason. [`AuthError::BadHeader`] shares
    /// `TOKEN_MALFORMED`, [`AuthError::MissingKeyId`] shares `UNKNOWN_KEY_ID`,
    /// and [`AuthError::InvalidClaim`] (a `sub` the service cannot use) shares
    /// `MISSING_CLAIM`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "TOKEN_MISSING",
            AuthError::TooLarge { .. } => "TOKEN_TOO_LARGE",
            AuthError::BadHeader { .. } | AuthError::Malformed { .. } => "TOKEN_MALFORMED",
            AuthError::AlgorithmNotAllowed { .. } => "ALGORITHM_NOT_ALLOWED",
            AuthError::MissingKeyId | AuthError::UnknownKeyId => "UNKNOWN_KEY_ID",
            AuthError::BadSignature => "BAD_SIGNATURE",
            AuthError::Expired => "TOKEN_EXPIRED",
            AuthError::NotYetValid => "TOKEN_NOT_YET_VALID",
            AuthError::WrongIssuer => "WRONG_ISSUER",
            AuthError::WrongAudience => "WRONG_AUDIENCE",
            AuthError::MissingClaim { .. } | AuthError::InvalidClaim { .. } => "MISSING_CLAIM",
            AuthError::BadRole => "BAD_ROLE",
        }
    }
}

/// Why an [`Authenticator`] could not be built. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: the HS256 secret is {len} bytes once trailing whitespace is trimmed; at least \
         {min} are required"
    )]
    SecretTooShort {
        path: PathBuf,
        len: usize,
        min: usize,
    },
    #[error("{path}: not a usable JWKS: {reason}")]
    InvalidJwks { path: PathBuf, reason: String },
    #[error(
        "{path}: the JWKS has no usable key (RSA or P-256 EC signing keys with a `kid`; see the \
         warnings for the keys skipped)"
    )]
    NoUsableKey { path: PathBuf },
    #[error("the JWT {setting} must not be empty")]
    EmptySetting { setting: &'static str },
    #[error("a clock-skew leeway of {secs} s is more than the {max} s allowed")]
    LeewayTooLarge { secs: u64, max: u64 },
}

/// One verification key with the only algorithm it accepts and the claim
/// checks for it.
struct VerifyKey {
    alg: Algorithm,
    alg_name: &'static str,
    key: DecodingKey,
    validation: Validation,
}

enum Keys {
    Hs256(Box<VerifyKey>),
    Jwks(HashMap<String, VerifyKey>),
}

/// Verifies bearer tokens. Built once at start-up and shared by every call.
pub struct Authenticator {
    keys: Keys,
    issuer: String,
    audience: String,
    leeway_secs: u64,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct KeysDebug<'a>(&'a Keys);
        impl fmt::Debug for KeysDebug<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0 {
                    Keys::Hs256(_) => f.write_str("Hs256(<secret redacted>)"),
                    Keys::Jwks(map) => {
                        let mut kids: Vec<(&String, &str)> =
                            map.iter().map(|(k, v)| (k, v.alg_name)).collect();
                        kids.sort();
                        f.debug_map().entries(kids).finish()
                    }
                }
            }
        }
        f.debug_struct("Authenticator")
            .field("keys", &KeysDebug(&self.keys))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

impl Authenticator {
    /// Reads the key file and checks the settings. JWKS keys of other types,
    /// without `kid`, or not for signatures are skipped with a warning.
    pub fn from_config(cfg: &AuthConfig) -> Result<Self, AuthSetupError> {
        if cfg.issuer.trim().is_empty() {
            return Err(AuthSetupError::EmptySetting { setting: "issuer" });
        }
        if cfg.audience.trim().is_empty() {
            return Err(AuthSetupError::EmptySetting {
                setting: "audience",
            });
        }
        if cfg.leeway_secs > MAX_LEEWAY_SECS {
            return Err(AuthSetupError::LeewayTooLarge {
                secs: cfg.leeway_secs,
                max: MAX_LEEWAY_SECS,
            });
        }
        let validation = |alg: Algorithm| {
            let mut v = Validation::new(alg);
            v.algorithms = vec![alg];
            v.leeway = cfg.leeway_secs;
            v.validate_exp = true;
            v.validate_nbf = true;
            v.validate_aud = true;
            v.set_issuer(&[cfg.issuer.as_str()]);
            v.set_audience(&[cfg.audience.as_str()]);
            v.set_required_spec_claims(&REQUIRED_CLAIMS);
            v
        };
        let keys = match &cfg.keys {
            KeySource::Hs256SecretFile(path) => {
                let secret = read_secret(path).map_err(|source| AuthSetupError::Read {
                    path: path.clone(),
                    source,
                })?;
                let len = secret.expose_secret().len();
                if len < MIN_SECRET_BYTES {
                    return Err(AuthSetupError::SecretTooShort {
                        path: path.clone(),
                        len,
                        min: MIN_SECRET_BYTES,
                    });
                }
                Keys::Hs256(Box::new(VerifyKey {
                    alg: Algorithm::HS256,
                    alg_name: "HS256",
                    key: DecodingKey::from_secret(secret.expose_secret()),
                    validation: validation(Algorithm::HS256),
                }))
            }
            KeySource::Jwks(path) => {
                let bytes = std::fs::read(path).map_err(|source| AuthSetupError::Read {
                    path: path.clone(),
                    source,
                })?;
                let parsed =
                    parse_jwks(path, &bytes).map_err(|reason| AuthSetupError::InvalidJwks {
                        path: path.clone(),
                        reason,
                    })?;
                if parsed.is_empty() {
                    return Err(AuthSetupError::NoUsableKey { path: path.clone() });
                }
                let map = parsed
                    .into_iter()
                    .map(|k| {
                        let key = VerifyKey {
                            alg: k.alg,
                            alg_name: k.alg_name,
                            key: k.key,
                            validation: validation(k.alg),
                        };
                        (k.kid, key)
                    })
                    .collect();
                Keys::Jwks(map)
            }
        };
        Ok(Authenticator {
            keys,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway_secs: cfg.leeway_secs,
        })
    }

    /// `value` is the raw `authorization` metadata value (None when absent).
    pub fn verify_header(&self, value: Option<&[u8]>) -> Result<Principal, AuthError> {
        let token = bearer_token(value)?;
        self.verify_token(token)
    }

    /// Verifies a bare token (without `Bearer `).
    pub fn verify_token(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge {
                limit: MAX_TOKEN_BYTES,
            });
        }
        if token.is_empty() {
            return Err(AuthError::Malformed {
                problem: "the token is empty",
            });
        }
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(AuthError::Malformed {
                problem: "it has characters other than base64url and `.`",
            });
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed {
                problem: "a JWT has three `.`-separated parts",
            });
        };
        let header = parse_header(header)?;
        let key = self.key_for(&header)?;
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation)
            .map_err(|e| from_jwt_error(&e, key.alg_name))?;
        self.principal(data.claims)
    }

    /// The key the token must verify with; its algorithm must be the key's.
    fn key_for(&self, header: &RawHeader) -> Result<&VerifyKey, AuthError> {
        match &self.keys {
            Keys::Hs256(key) => {
                if header.alg != key.alg_name {
                    return Err(AuthError::AlgorithmNotAllowed {
                        allowed: key.alg_name,
                    });
                }
                Ok(key)
            }
            Keys::Jwks(map) => {
                // Checked before the key lookup: HS* or `none` never reaches a key.
                if !matches!(header.alg.as_str(), "RS256" | "ES256") {
                    return Err(AuthError::AlgorithmNotAllowed {
                        allowed: "RS256 or ES256",
                    });
                }
                let kid = match header.kid.as_deref() {
                    Some(kid) if !kid.is_empty() => kid,
                    _ => return Err(AuthError::MissingKeyId),
                };
                let key = map.get(kid).ok_or(AuthError::UnknownKeyId)?;
                if header.alg != key.alg_name {
                    return Err(AuthError::AlgorithmNotAllowed {
                        allowed: key.alg_name,
                    });
                }
                debug_assert!(key.validation.algorithms == [key.alg]);
                Ok(key)
            }
        }
    }

    /// The checks `jsonwebtoken` leaves to us, on a token whose signature,
    /// times, issuer and audience it has verified.
    fn principal(&self, claims: Claims) -> Result<Principal, AuthError> {
        // jsonwebtoken also accepts an array of issuers containing ours.
        if claims.iss.as_str() != Some(self.issuer.as_str()) {
            return Err(AuthError::WrongIssuer);
        }
        let Value::String(subject) = claims.sub else {
            return Err(AuthError::MissingClaim { claim: "sub" });
        };
        if subject.is_empty() {
            return Err(AuthError::MissingClaim { claim: "sub" });
        }
        if subject.len() > MAX_SUBJECT_BYTES {
            return Err(AuthError::InvalidClaim {
                claim: "sub",
                problem: "longer than 128 bytes",
            });
        }
        if subject.chars().any(char::is_control) {
            return Err(AuthError::InvalidClaim {
                claim: "sub",
                problem: "it contains control characters",
            });
        }
        let role = Role::from_claim(&claims.role)?;
        let skills = match claims.skills {
            Value::Null => None,
            Value::Array(items) if items.len() <= 64 => Some(
                items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) if !s.is_empty() && s.len() <= 32 => Ok(s),
                        _ => Err(AuthError::InvalidClaim {
                            claim: "skills",
                            problem: "every skill must be a string of 1-32 bytes",
                        }),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            _ => {
                return Err(AuthError::InvalidClaim {
                    claim: "skills",
                    problem: "it must be a list of at most 64 skill names",
                });
            }
        };
        Ok(Principal {
            subject,
            role,
            skills,
        })
    }
}

/// The token out of `Bearer <token>`: scheme case-insensitive, one space,
/// one token, printable ASCII only.
fn bearer_token(value: Option<&[u8]>) -> Result<&str, AuthError> {
    let value = match value {
        None => return Err(AuthError::Missing),
        Some([]) => return Err(AuthError::Missing),
        Some(v) => v,
    };
    if value.len() > BEARER.len() + 1 + MAX_TOKEN_BYTES {
        return Err(AuthError::TooLarge {
            limit: MAX_TOKEN_BYTES,
        });
    }
    let not_ascii = AuthError::BadHeader {
        problem: "it contains bytes other than printable ASCII",
    };
    if !value.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(not_ascii);
    }
    let text = std::str::from_utf8(value).map_err(|_| not_ascii)?;
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case(BEARER) {
        return Err(AuthError::BadHeader {
            problem: "the scheme is not Bearer",
        });
    }
    if token.is_empty() {
        return Err(AuthError::BadHeader {
            problem: "no token follows the scheme",
        });
    }
    if token.contains(' ') {
        return Err(AuthError::BadHeader {
            problem: "exactly one token must follow `Bearer `",
        });
    }
    Ok(token)
}

/// The header fields read before choosing a key. Unknown fields are ignored
/// (jsonwebtoken parses the header again, strictly typed).
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

fn parse_header(segment: &str) -> Result<RawHeader, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed {
            problem: "the header is not base64url",
        })?;
    let header: RawHeader = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed {
        problem: "the header is not a JSON object with a string `alg`",
    })?;
    // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; we
    // understand none.
    if header.crit.is_some() {
        return Err(AuthError::Malformed {
            problem: "critical header extensions (`crit`) are not supported",
        });
    }
    Ok(header)
}

/// The claims read after verification. `Value` fields so that a wrong type
/// reaches our checks instead of failing deserialisation.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: Value,
    #[serde(default)]
    sub: Value,
    #[serde(default)]
    role: Value,
    #[serde(default)]
    skills: Value,
}

/// Maps a `jsonwebtoken` error without ever using its message (which may
/// quote the token).
fn from_jwt_error(err: &jsonwebtoken::errors::Error, allowed: &'static str) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match err.kind() {
        K::ExpiredSignature => AuthError::Expired,
        K::ImmatureSignature => AuthError::NotYetValid,
        K::InvalidIssuer => AuthError::WrongIssuer,
        K::InvalidAudience => AuthError::WrongAudience,
        K::InvalidSignature => AuthError::BadSignature,
        K::MissingRequiredClaim(claim) => AuthError::MissingClaim {
            claim: match claim.as_str() {
                "exp" => "exp",
                "iss" => "iss",
                "aud" => "aud",
                "sub" => "sub",
                "nbf" => "nbf",
                _ => "required",
            },
        },
        K::InvalidAlgorithm | K::MissingAlgorithm | K::InvalidAlgorithmName => {
            AuthError::AlgorithmNotAllowed { allowed }
        }
        K::InvalidToken => AuthError::Malformed {
            problem: "it is not a compact JWS",
        },
        K::Base64(_) => AuthError::Malformed {
            problem: "a part is not base64url",
        },
        K::Json(_) => AuthError::Malformed {
            problem: "the header or claims are not the expected JSON",
        },
        K::Utf8(_) => AuthError::Malformed {
            problem: "a part is not UTF-8",
        },
        other => {
            // Key or crypto failures: the token cannot be verified with this
            // key. None of these kinds carry token content.
            tracing::warn!(kind = ?other, "JWT verification failed inside the crypto library");
            AuthError::BadSignature
        }
    }
}

/// Reads a secret file: its bytes as-is, trailing whitespace trimmed.
fn read_secret(path: &Path) -> std::io::Result<SecretSlice<u8>> {
    let mut bytes = std::fs::read(path)?;
    let len = bytes.trim_ascii_end().len();
    bytes.truncate(len);
    Ok(SecretSlice::from(bytes))
}

struct JwksKey {
    kid: String,
    alg: Algorithm,
    alg_name: &'static str,
    key: DecodingKey,
}

#[derive(Deserialize)]
struct JwksFile {
    keys: Vec<Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// The usable keys of a JWKS. Unsupported keys are skipped with a warning;
/// a supported key with bad material, or a repeated `kid`, is an error.
fn parse_jwks(path: &Path, bytes: &[u8]) -> Result<Vec<JwksKey>, String> {
    let file: JwksFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut out: Vec<JwksKey> = Vec::new();
    for (index, value) in file.keys.into_iter().enumerate() {
        let jwk: RawJwk =
            serde_json::from_value(value).map_err(|e| format!("key #{index}: {e}"))?;
        let skip = |why: &str| {
            tracing::warn!(
                path = %path.display(),
                key = index,
                kid = jwk.kid.as_deref().unwrap_or(""),
                "JWKS key skipped: {why}"
            );
        };
        let kid = match jwk.kid.as_deref() {
            Some(kid) if !kid.is_empty() => kid,
            _ => {
                skip("it has no `kid`");
                continue;
            }
        };
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            skip("its `use` is not `sig`");
            continue;
        }
        let what = |msg: &str| format!("key `{kid}`: {msg}");
        let (alg, alg_name, key) = match (jwk.kty.as_deref(), jwk.crv.as_deref()) {
            (Some("RSA"), _) => {
                if jwk.alg.as_deref().is_some_and(|a| a != "RS256") {
                    skip("RSA keys are used only with RS256");
                    continue;
                }
                let (Some(n), Some(e)) = (jwk.n.as_deref(), jwk.e.as_deref()) else {
                    return Err(what("an RSA key needs `n` and `e`"));
                };
                check_rsa(n, e).map_err(what)?;
                let key = DecodingKey::from_rsa_components(n, e)
                    .map_err(|_| what("`n` or `e` is not base64url"))?;
                (Algorithm::RS256, "RS256", key)
            }
            (Some("EC"), Some("P-256")) => {
                if jwk.alg.as_deref().is_some_and(|a| a != "ES256") {
                    skip("P-256 keys are used only with ES256");
                    continue;
                }
                let (Some(x), Some(y)) = (jwk.x.as_deref(), jwk.y.as_deref()) else {
                    return Err(what("an EC key needs `x` and `y`"));
                };
                for (name, c) in [("x", x), ("y", y)] {
                    match URL_SAFE_NO_PAD.decode(c) {
                        Ok(b) if b.len() == 32 => {}
                        Ok(_) => return Err(what(&format!("`{name}` is not 32 bytes"))),
                        Err(_) => return Err(what(&format!("`{name}` is not base64url"))),
                    }
                }
                let key = DecodingKey::from_ec_components(x, y)
                    .map_err(|_| what("`x` or `y` is not base64url"))?;
                (Algorithm::ES256, "ES256", key)
            }
            (Some("EC"), _) => {
                skip("only the P-256 curve is supported");
                continue;
            }
            _ => {
                skip("only RSA and EC keys are supported");
                continue;
            }
        };
        if out.iter().any(|k| k.kid == kid) {
            return Err(format!("`kid` `{kid}` appears more than once"));
        }
        out.push(JwksKey {
            kid: kid.to_owned(),
            alg,
            alg_name,
            key,
        });
    }
    Ok(out)
}

/// What the verifier (ring) accepts: a 2048..=8192-bit modulus in minimal
/// big-endian form and an odd exponent of 3 or more, below 2^33.
fn check_rsa(n: &str, e: &str) -> Result<(), &'static str> {
    let n = URL_SAFE_NO_PAD
        .decode(n)
        .map_err(|_| "`n` is not base64url")?;
    let e = URL_SAFE_NO_PAD
        .decode(e)
        .map_err(|_| "`e` is not base64url")?;
    let Some(&top) = n.first() else {
        return Err("`n` is empty");
    };
    if top == 0 {
        return Err("`n` has a leading zero byte");
    }
    let bits = (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize);
    if !(2048..=8192).contains(&bits) {
        return Err("the modulus must be 2048 to 8192 bits");
    }
    if e.is_empty() || e.len() > 5 || e[0] == 0 {
        return Err("`e` is not a valid exponent");
    }
    let exponent = e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if exponent < 3 || exponent % 2 == 0 || exponent >= 1 << 33 {
        return Err("`e` is not a valid exponent");
    }
    Ok(())
}

/// Mints an HS256 token (development tokens and tests).
pub fn mint_hs256(secret: &[u8], claims: &Value) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

/// Creates (0600 perms on unix) a random 32-byte secret file if missing,
/// returns its bytes. Written atomically (temp file in same dir + rename).
///
/// The 32 random bytes are stored hex-encoded (64 ASCII characters and a
/// newline), so that trimming trailing whitespace, as
/// [`KeySource::Hs256SecretFile`] does, never shortens them. The bytes
/// returned are the ones the verifier uses: the file's, trimmed. An existing
/// file is read, not replaced; if it is shorter than [`MIN_SECRET_BYTES`] the
/// result is an `InvalidData` error. When two processes race, the first
/// rename wins and both return its secret.
pub fn ensure_dev_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    match read_checked_secret(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        other => return other,
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut raw = secrecy::zeroize::Zeroizing::new([0u8; 32]);
    rand::fill(&mut raw[..]);
    let text = secrecy::zeroize::Zeroizing::new(hex::encode(&raw[..]));
    // NamedTempFile is created 0600 on unix; set it anyway, it is the point.
    let mut tmp = tempfile::Builder::new()
        .prefix(".dev-secret")
        .tempfile_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    tmp.write_all(text.as_bytes())?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(text.as_bytes().to_vec()),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => read_checked_secret(path),
        Err(e) => Err(e.error),
    }
}

fn read_checked_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    let secret = read_secret(path)?;
    let bytes = secret.expose_secret();
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{}: the secret is {} bytes once trailing whitespace is trimmed; at least {} are \
                 required (delete the file to have a new one generated)",
                path.display(),
                bytes.len(),
                MIN_SECRET_BYTES
            ),
        ));
    }
    Ok(bytes.to_vec())
}

/// Test support, not used by the service: tokens signed with the committed
/// test-only keys under `tests/fixtures/jwt/`, and bad `authorization`
/// values for a server configured with that directory's `jwks.json`. Shared
/// by this module's tests and the end-to-end gRPC suite.
///
/// # Panics
///
/// Every function panics if the fixtures cannot be read or signed with.
pub mod test_support {
    use std::path::Path;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Map, Value, json};

    use super::MAX_TOKEN_BYTES;

    /// Seconds since the Unix epoch.
    pub fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Valid claims for `subject`: `iss`, `aud`, `sub`, `iat` now and `exp`
    /// ten minutes from now (no `role`, so a customer).
    pub fn claims(issuer: &str, audience: &str, subject: &str) -> Value {
        let now = now();
        json!({ "iss": issuer, "aud": audience, "sub": subject, "iat": now, "exp": now + 600 })
    }

    /// A token for `claims` signed with the fixture key `kid` names
    /// (`rsa-1`: RS256 with `rsa-private.pem`, `ec-1`: ES256 with
    /// `ec-private.pem`), `kid` in its header.
    pub fn token(fixtures: &Path, kid: &str, claims: &Value) -> String {
        let (alg, key) = match kid {
            "rsa-1" => (Algorithm::RS256, rsa_key(fixtures, "rsa-private.pem")),
            "ec-1" => (Algorithm::ES256, ec_key(fixtures)),
            other => panic!("no fixture key has kid `{other}` (use rsa-1 or ec-1)"),
        };
        sign(alg, Some(kid), claims, &key)
    }

    /// At least 20 `(case, authorization value, expected reason)` rows, each
    /// refused by a server configured with `fixtures/jwks.json`, `issuer`
    /// and `audience` (leeway of at most 300 s). Tokens expire in ten minutes.
    pub fn rejection_matrix(
        fixtures: &Path,
        issuer: &str,
        audience: &str,
    ) -> Vec<(&'static str, String, &'static str)> {
        let base = claims(issuer, audience, "customer-42");
        let now = now();
        let edited = |edit: &dyn Fn(&mut Map<String, Value>)| {
            let mut c = base.clone();
            if let Value::Object(m) = &mut c {
                edit(m);
            }
            c
        };
        let rsa = |c: &Value| token(fixtures, "rsa-1", c);
        let bearer = |t: &str| format!("Bearer {t}");
        let rsa_private = rsa_key(fixtures, "rsa-private.pem");
        let good = rsa(&base);

        let alg_none = format!(
            "{}.{}.",
            b64_json(&json!({ "alg": "none", "typ": "JWT" })),
            b64_json(&base)
        );
        let rsa_public = read(fixtures, "rsa-public.pem");
        let confusion = sign(
            Algorithm::HS256,
            Some("rsa-1"),
            &base,
            &EncodingKey::from_secret(&rsa_public),
        );
        let rs384 = sign(Algorithm::RS384, Some("rsa-1"), &base, &rsa_private);
        let es256_as_rsa = sign(Algorithm::ES256, Some("rsa-1"), &base, &ec_key(fixtures));
        let other_key = sign(
            Algorithm::RS256,
            Some("rsa-1"),
            &base,
            &rsa_key(fixtures, "other-rsa-private.pem"),
        );
        let tampered = {
            let parts: Vec<&str> = good.split('.').collect();
            let admin = edited(&|m| {
                m.insert("role".into(), json!("admin"));
            });
            format!("{}.{}.{}", parts[0], b64_json(&admin), parts[2])
        };
        let unknown_kid = sign(Algorithm::RS256, Some("rsa-2"), &base, &rsa_private);
        let no_kid = sign(Algorithm::RS256, None, &base, &rsa_private);
        let expired = edited(&|m| {
            m.insert("exp".into(), json!(now - 3600));
        });

        vec![
            ("empty_value", String::new(), "TOKEN_MISSING"),
            (
                "wrong_scheme",
                "Basic dXNlcjpwYXNz".into(),
                "TOKEN_MALFORMED",
            ),
            ("scheme_only", "Bearer".into(), "TOKEN_MALFORMED"),
            (
                "two_tokens",
                format!("Bearer {good} {good}"),
                "TOKEN_MALFORMED",
            ),
            (
                "oversized",
                bearer(&"a".repeat(MAX_TOKEN_BYTES + 1)),
                "TOKEN_TOO_LARGE",
            ),
            ("garbage", bearer("not-a-jwt"), "TOKEN_MALFORMED"),
            ("alg_none", bearer(&alg_none), "ALGORITHM_NOT_ALLOWED"),
            (
                "hs256_signed_with_rsa_public_key",
                bearer(&confusion),
                "ALGORITHM_NOT_ALLOWED",
            ),
            ("rs384", bearer(&rs384), "ALGORITHM_NOT_ALLOWED"),
            (
                "es256_with_rsa_kid",
                bearer(&es256_as_rsa),
                "ALGORITHM_NOT_ALLOWED",
            ),
            ("other_rsa_key", bearer(&other_key), "BAD_SIGNATURE"),
            ("tampered_payload", bearer(&tampered), "BAD_SIGNATURE"),
            ("unknown_kid", bearer(&unknown_kid), "UNKNOWN_KEY_ID"),
            ("missing_kid", bearer(&no_kid), "UNKNOWN_KEY_ID"),
            ("expired", bearer(&rsa(&expired)), "TOKEN_EXPIRED"),
            (
                "expired_es256",
                bearer(&token(fixtures, "ec-1", &expired)),
                "TOKEN_EXPIRED",
            ),
            (
                "not_yet_valid",
                bearer(&rsa(&edited(&|m| {
                    m.insert("nbf".into(), json!(now + 3600));
                }))),
                "TOKEN_NOT_YET_VALID",
            ),
            (
                "wrong_issuer",
                bearer(&rsa(&edited(&|m| {
                    m.insert("iss".into(), json!("https://attacker.example"));
                }))),
                "WRONG_ISSUER",
            ),
            (
                "missing_issuer",
                bearer(&rsa(&edited(&|m| {
                    m.remove("iss");
                }))),
                "MISSING_CLAIM",
            ),
            (
                "wrong_audience",
                bearer(&rsa(&edited(&|m| {
                    m.insert("aud".into(), json!("some-other-service"));
                }))),
                "WRONG_AUDIENCE",
            ),
            (
                "missing_audience",
                bearer(&rsa(&edited(&|m| {
                    m.remove("aud");
                }))),
                "MISSING_CLAIM",
            ),
            (
                "missing_subject",
                bearer(&rsa(&edited(&|m| {
                    m.remove("sub");
                }))),
                "MISSING_CLAIM",
            ),
            (
                "empty_subject",
                bearer(&rsa(&edited(&|m| {
                    m.insert("sub".into(), json!(""));
                }))),
                "MISSING_CLAIM",
            ),
            (
                "missing_exp",
                bearer(&rsa(&edited(&|m| {
                    m.remove("exp");
                }))),
                "MISSING_CLAIM",
            ),
            (
                "bad_role",
                bearer(&rsa(&edited(&|m| {
                    m.insert("role".into(), json!("superuser"));
                }))),
                "BAD_ROLE",
            ),
        ]
    }

    fn read(fixtures: &Path, name: &str) -> Vec<u8> {
        let path = fixtures.join(name);
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
    }

    fn rsa_key(fixtures: &Path, name: &str) -> EncodingKey {
        EncodingKey::from_rsa_pem(&read(fixtures, name))
            .unwrap_or_else(|e| panic!("fixture {name} is not an RSA private key: {e}"))
    }

    fn ec_key(fixtures: &Path) -> EncodingKey {
        EncodingKey::from_ec_pem(&read(fixtures, "ec-private.pem"))
            .unwrap_or_else(|e| panic!("fixture ec-private.pem is not a P-256 PKCS#8 key: {e}"))
    }

    fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key)
            .unwrap_or_else(|e| panic!("cannot sign a {alg:?} test token: {e}"))
    }

    fn b64_json(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{Value, json};

    use super::test_support::{claims, now, rejection_matrix, token};
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/jwt");
    const SECRET_FILE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/jwt/hs256.secret"
    );
    const ISSUER: &str = "https://auth.bank.test";
    const AUDIENCE: &str = "bankbot";

    fn fixtures() -> &'static Path {
        Path::new(FIXTURES)
    }

    fn config(keys: KeySource) -> AuthConfig {
        AuthConfig {
            keys,
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }

    fn jwks() -> Authenticator {
        Authenticator::from_config(&config(KeySource::Jwks(fixtures().join("jwks.json")))).unwrap()
    }

    fn hs() -> Authenticator {
        Authenticator::from_config(&config(KeySource::Hs256SecretFile(SECRET_FILE.into()))).unwrap()
    }

    fn secret() -> Vec<u8> {
        let bytes = std::fs::read(SECRET_FILE).unwrap();
        bytes.trim_ascii_end().to_vec()
    }

    fn hs_token(c: &Value) -> String {
        mint_hs256(&secret(), c).unwrap()
    }

    fn base() -> Value {
        claims(ISSUER, AUDIENCE, "customer-42")
    }

    fn with(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut c = base();
        edit(c.as_object_mut().unwrap());
        c
    }

    fn bearer(t: &str) -> Option<Vec<u8>> {
        Some(format!("Bearer {t}").into_bytes())
    }

    /// The error, after checking its message repeats no part of the token.
    fn refused(auth: &Authenticator, header: Option<&[u8]>) -> AuthError {
        let err = auth.verify_header(header).unwrap_err();
        let message = err.to_string();
        let debug = format!("{err:?}");
        if let Some(h) = header {
            let text = String::from_utf8_lossy(h);
            let token = text.split_once(' ').map_or(&*text, |(_, t)| t);
            for part in token.split(['.', ' ']).filter(|p| p.len() >= 8) {
                assert!(!message.contains(part), "{message} repeats the token");
                assert!(!debug.contains(part), "{debug} repeats the token");
            }
        }
        err
    }

    #[test]
    fn accepts_hs256() {
        let p = hs()
            .verify_header(bearer(&hs_token(&base())).as_deref())
            .unwrap();
        assert_eq!(
            p,
            Principal {
                subject: "customer-42".into(),
                role: Role::Customer,
                skills: None,
            }
        );
    }

    #[test]
    fn accepts_rs256_and_es256_by_kid() {
        let auth = jwks();
        for kid in ["rsa-1", "ec-1"] {
            let t = token(fixtures(), kid, &base());
            let p = auth.verify_header(bearer(&t).as_deref()).unwrap();
            assert_eq!(p.subject, "customer-42", "{kid}");
            assert_eq!(auth.verify_token(&t).unwrap(), p);
        }
    }

    #[test]
    fn agent_skills_claim() {
        let auth = jwks();
        let with = |v: Value| {
            let c = with(|m| {
                m.insert("role".into(), json!("agent"));
                m.insert("skills".into(), v);
            });
            auth.verify_token(&token(fixtures(), "rsa-1", &c))
        };
        assert_eq!(
            with(json!(["cards", "fraud"])).unwrap().skills,
            Some(vec!["cards".to_owned(), "fraud".to_owned()])
        );
        assert_eq!(with(Value::Null).unwrap().skills, None);
        for bad in [json!("cards"), json!([""]), json!([1]), json!({"a": 1})] {
            assert_eq!(
                with(bad.clone()).unwrap_err().reason(),
                "MISSING_CLAIM",
                "{bad}"
            );
        }
    }

    #[test]
    fn roles() {
        let auth = jwks();
        let role = |r: Value| {
            let c = with(|m| {
                m.insert("role".into(), r);
            });
            auth.verify_token(&token(fixtures(), "rsa-1", &c))
        };
        assert_eq!(role(json!("customer")).unwrap().role, Role::Customer);
        assert_eq!(role(json!("agent")).unwrap().role, Role::Agent);
        assert_eq!(role(json!("admin")).unwrap().role, Role::Admin);
        assert_eq!(role(Value::Null).unwrap().role, Role::Customer);
        for bad in [
            json!("Agent"),
            json!("superuser"),
            json!(""),
            json!(2),
            json!(["admin"]),
        ] {
            assert_eq!(role(bad.clone()).unwrap_err().reason(), "BAD_ROLE", "{bad}");
        }
        assert_eq!(Role::Agent.as_str(), "agent");
        assert_eq!(Role::Admin.as_str(), "admin");
        assert_eq!(Role::Customer.as_str(), "customer");
    }

    #[test]
    fn scheme_is_case_insensitive() {
        let auth = hs();
        let t = hs_token(&base());
        for scheme in ["bearer", "BEARER", "bEaReR"] {
            let header = format!("{scheme} {t}");
            auth.verify_header(Some(header.as_bytes())).unwrap();
        }
    }

    #[test]
    fn audience_may_be_an_array_containing_ours() {
        let auth = hs();
        let ok = with(|m| {
            m.insert("aud".into(), json!(["other", AUDIENCE]));
        });
        auth.verify_token(&hs_token(&ok)).unwrap();
        let bad = with(|m| {
            m.insert("aud".into(), json!(["other", "another"]));
        });
        let err = auth.verify_token(&hs_token(&bad)).unwrap_err();
        assert_eq!(err.reason(), "WRONG_AUDIENCE");
    }

    #[test]
    fn leeway_covers_small_clock_skew() {
        let auth = jwks();
        let expired_recently = with(|m| {
            m.insert("exp".into(), json!(now() - 10));
        });
        auth.verify_token(&token(fixtures(), "ec-1", &expired_recently))
            .unwrap();
        let starts_soon = with(|m| {
            m.insert("nbf".into(), json!(now() + 10));
        });
        auth.verify_token(&token(fixtures(), "rsa-1", &starts_soon))
            .unwrap();
        let started = with(|m| {
            m.insert("nbf".into(), json!(now() - 10));
        });
        auth.verify_token(&token(fixtures(), "rsa-1", &started))
            .unwrap();
    }

    /// Every row: (case, verifier, header, expected reason).
    #[test]
    fn rejection_matrix_reasons() {
        let (jwks, hs) = (jwks(), hs());
        let rsa = |c: &Value| token(fixtures(), "rsa-1", c);
        let good_rsa = rsa(&base());
        let good_hs = hs_token(&base());
        let rsa_public = std::fs::read(fixtures().join("rsa-public.pem")).unwrap();
        let sign = |alg: Algorithm, kid: Option<&str>, c: &Value, key: &EncodingKey| {
            let mut h = Header::new(alg);
            h.kid = kid.map(str::to_owned);
            jsonwebtoken::encode(&h, c, key).unwrap()
        };
        let rsa_key =
            EncodingKey::from_rsa_pem(&std::fs::read(fixtures().join("rsa-private.pem")).unwrap())
                .unwrap();
        let other_key = EncodingKey::from_rsa_pem(
            &std::fs::read(fixtures().join("other-rsa-private.pem")).unwrap(),
        )
        .unwrap();
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let alg_none = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&base()));
        let alg_none_signed = format!("{}.{}", b64(&json!({"alg": "none"})), {
            let (_, rest) = good_hs.split_once('.').unwrap();
            rest
        });
        let tampered = {
            let p: Vec<&str> = good_rsa.split('.').collect();
            let evil = with(|m| {
                m.insert("sub".into(), json!("customer-43"));
            });
            format!("{}.{}.{}", p[0], b64(&evil), p[2])
        };
        let tampered_hs = {
            let p: Vec<&str> = good_hs.split('.').collect();
            let evil = with(|m| {
                m.insert("role".into(), json!("admin"));
            });
            format!("{}.{}.{}", p[0], b64(&evil), p[2])
        };
        let crit = {
            let header = json!({"alg": "HS256", "typ": "JWT", "crit": ["exp"]});
            let message = format!("{}.{}", b64(&header), b64(&base()));
            // Signed correctly: refused for `crit` alone.
            let sig = {
                let t = mint_hs256(&secret(), &base()).unwrap();
                t.rsplit_once('.').unwrap().1.to_owned()
            };
            format!("{message}.{sig}")
        };
        let wrong_secret = mint_hs256(&[7u8; 48], &base()).unwrap();
        let hs_edit = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
            let mut c = base();
            edit(c.as_object_mut().unwrap());
            bearer(&hs_token(&c))
        };
        let rsa_edit = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
            let mut c = base();
            edit(c.as_object_mut().unwrap());
            bearer(&rsa(&c))
        };

        let cases: Vec<(&str, &Authenticator, Option<Vec<u8>>, &str)> = vec![
            ("missing header", &hs, None, "TOKEN_MISSING"),
            ("empty header", &hs, Some(vec![]), "TOKEN_MISSING"),
            (
                "wrong scheme",
                &hs,
                Some(format!("Basic {good_hs}").into_bytes()),
                "TOKEN_MALFORMED",
            ),
            (
                "no space after scheme",
                &hs,
                Some(format!("Bearer{good_hs}").into_bytes()),
                "TOKEN_MALFORMED",
            ),
            (
                "empty token",
                &hs,
                Some(b"Bearer ".to_vec()),
                "TOKEN_MALFORMED",
            ),
            (
                "scheme only",
                &jwks,
                Some(b"Bearer".to_vec()),
                "TOKEN_MALFORMED",
            ),
            (
                "two spaces",
                &hs,
                Some(format!("Bearer  {good_hs}").into_bytes()),
                "TOKEN_MALFORMED",
            ),
            (
                "trailing text",
                &hs,
                Some(format!("Bearer {good_hs} x").into_bytes()),
                "TOKEN_MALFORMED",
            ),
            (
                "non-ascii",
                &hs,
                Some(format!("Bearer {good_hs}é").into_bytes()),
                "TOKEN_MALFORMED",
            ),
            (
                "tab separator",
                &hs,
                Some(format!("Bearer\t{good_hs}").into_bytes()),
                "TOKEN_MALFORMED",
            ),
            (
                "oversized",
                &hs,
                bearer(&"a".repeat(MAX_TOKEN_BYTES + 1)),
                "TOKEN_TOO_LARGE",
            ),
            (
                "oversized and not ascii",
                &jwks,
                Some(vec![0xff; 3 * MAX_TOKEN_BYTES]),
                "TOKEN_TOO_LARGE",
            ),
            ("garbage", &hs, bearer("garbage"), "TOKEN_MALFORMED"),
            ("two parts", &jwks, bearer("abc.def"), "TOKEN_MALFORMED"),
            (
                "four parts",
                &jwks,
                bearer(&format!("{good_rsa}.x")),
                "TOKEN_MALFORMED",
            ),
            (
                "header not json",
                &hs,
                bearer("bm90LWpzb24.e30.c2ln"),
                "TOKEN_MALFORMED",
            ),
            (
                "payload not base64url",
                &hs,
                bearer(&format!("{}.%%%.x", good_hs.split('.').next().unwrap())),
                "TOKEN_MALFORMED",
            ),
            (
                "alg none to hs",
                &hs,
                bearer(&alg_none),
                "ALGORITHM_NOT_ALLOWED",
            ),
            (
                "alg none to jwks",
                &jwks,
                bearer(&alg_none),
                "ALGORITHM_NOT_ALLOWED",
            ),
            (
                "alg none keeping an hs signature",
                &hs,
                bearer(&alg_none_signed),
                "ALGORITHM_NOT_ALLOWED",
            ),
            (
                "hs256 signed with the rsa public pem (confusion)",
                &jwks,
                bearer(&sign(
                    Algorithm::HS256,
                    Some("rsa-1"),
                    &base(),
                    &EncodingKey::from_secret(&rsa_public),
                )),
                "ALGORITHM_NOT_ALLOWED",
            ),
            (
                "hs256 to jwks",
                &jwks,
                bearer(&good_hs),
                "ALGORITHM_NOT_ALLOWED",
            ),
            (
                "rs256 to hs",
                &hs,
                bearer(&good_rsa),
                "ALGORITHM_NOT_ALLOWED",
            ),
            (
                "hs512 to hs",
                &hs,
                bearer(&sign(
                    Algorithm::HS512,
                    None,
                    &base(),
                    &EncodingKey::from_secret(&secret()),
                )),
                "ALGORITHM_NOT_ALLOWED",
            ),
            (
                "rs256 with the ec kid",
                &jwks,
                bearer(&sign(Algorithm::RS256, Some("ec-1"), &base(), &rsa_key)),
                "ALGORITHM_NOT_ALLOWED",
            ),
            (
                "bad signature (other rsa key, same kid)",
                &jwks,
                bearer(&sign(Algorithm::RS256, Some("rsa-1"), &base(), &other_key)),
                "BAD_SIGNATURE",
            ),
            (
                "hs wrong secret",
                &hs,
                bearer(&wrong_secret),
                "BAD_SIGNATURE",
            ),
            (
                "tampered payload",
                &jwks,
                bearer(&tampered),
                "BAD_SIGNATURE",
            ),
            (
                "tampered hs payload",
                &hs,
                bearer(&tampered_hs),
                "BAD_SIGNATURE",
            ),
            (
                "unknown kid",
                &jwks,
                bearer(&sign(Algorithm::RS256, Some("rsa-9"), &base(), &rsa_key)),
                "UNKNOWN_KEY_ID",
            ),
            (
                "missing kid",
                &jwks,
                bearer(&sign(Algorithm::RS256, None, &base(), &rsa_key)),
                "UNKNOWN_KEY_ID",
            ),
            (
                "empty kid",
                &jwks,
                bearer(&sign(Algorithm::RS256, Some(""), &base(), &rsa_key)),
                "UNKNOWN_KEY_ID",
            ),
            ("crit header", &hs, bearer(&crit), "TOKEN_MALFORMED"),
            (
                "expired beyond leeway",
                &jwks,
                rsa_edit(&|m| {
                    m.insert("exp".into(), json!(now() - 120));
                }),
                "TOKEN_EXPIRED",
            ),
            (
                "expired hs",
                &hs,
                hs_edit(&|m| {
                    m.insert("exp".into(), json!(now() - 3600));
                }),
                "TOKEN_EXPIRED",
            ),
            (
                "future nbf",
                &jwks,
                rsa_edit(&|m| {
                    m.insert("nbf".into(), json!(now() + 120));
                }),
                "TOKEN_NOT_YET_VALID",
            ),
            (
                "wrong iss",
                &jwks,
                rsa_edit(&|m| {
                    m.insert("iss".into(), json!("https://evil.test"));
                }),
                "WRONG_ISSUER",
            ),
            (
                "iss array containing ours",
                &hs,
                hs_edit(&|m| {
                    m.insert("iss".into(), json!([ISSUER, "https://evil.test"]));
                }),
                "WRONG_ISSUER",
            ),
            (
                "missing iss",
                &hs,
                hs_edit(&|m| {
                    m.remove("iss");
                }),
                "MISSING_CLAIM",
            ),
            (
                "wrong aud",
                &hs,
                hs_edit(&|m| {
                    m.insert("aud".into(), json!("someone-else"));
                }),
                "WRONG_AUDIENCE",
            ),
            (
                "missing aud",
                &jwks,
                rsa_edit(&|m| {
                    m.remove("aud");
                }),
                "MISSING_CLAIM",
            ),
            (
                "missing sub",
                &hs,
                hs_edit(&|m| {
                    m.remove("sub");
                }),
                "MISSING_CLAIM",
            ),
            (
                "empty sub",
                &jwks,
                rsa_edit(&|m| {
                    m.insert("sub".into(), json!(""));
                }),
                "MISSING_CLAIM",
            ),
            (
                "numeric sub",
                &hs,
                hs_edit(&|m| {
                    m.insert("sub".into(), json!(42));
                }),
                "MISSING_CLAIM",
            ),
            (
                "sub too long",
                &hs,
                hs_edit(&|m| {
                    m.insert("sub".into(), json!("x".repeat(MAX_SUBJECT_BYTES + 1)));
                }),
                "MISSING_CLAIM",
            ),
            (
                "sub with control characters",
                &hs,
                hs_edit(&|m| {
                    m.insert("sub".into(), json!("alice\nadmin"));
                }),
                "MISSING_CLAIM",
            ),
            (
                "missing exp",
                &jwks,
                rsa_edit(&|m| {
                    m.remove("exp");
                }),
                "MISSING_CLAIM",
            ),
            (
                "exp not a number",
                &hs,
                hs_edit(&|m| {
                    m.insert("exp".into(), json!("tomorrow"));
                }),
                "MISSING_CLAIM",
            ),
            (
                "bad role",
                &hs,
                hs_edit(&|m| {
                    m.insert("role".into(), json!("root"));
                }),
                "BAD_ROLE",
            ),
        ];
        assert!(cases.len() >= 20);
        for (name, auth, header, reason) in &cases {
            let err = refused(auth, header.as_deref());
            assert_eq!(err.reason(), *reason, "{name}: {err}");
        }
        // The 128-byte boundary itself is accepted.
        let longest = with(|m| {
            m.insert("sub".into(), json!("x".repeat(MAX_SUBJECT_BYTES)));
        });
        hs.verify_token(&hs_token(&longest)).unwrap();
    }

    #[test]
    fn shared_matrix_is_refused_as_documented() {
        let auth = jwks();
        let matrix = rejection_matrix(fixtures(), ISSUER, AUDIENCE);
        assert!(matrix.len() >= 20, "{}", matrix.len());
        let mut names: Vec<&str> = matrix.iter().map(|(n, _, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), matrix.len(), "case names are unique");
        for (name, header, reason) in &matrix {
            let err = refused(&auth, Some(header.as_bytes()));
            assert_eq!(err.reason(), *reason, "{name}: {err}");
        }
    }

    #[test]
    fn oversized_bare_token_is_refused_before_decoding() {
        let err = jwks()
            .verify_token(&"\u{1}".repeat(MAX_TOKEN_BYTES + 1))
            .unwrap_err();
        assert_eq!(err.reason(), "TOKEN_TOO_LARGE");
        let err = jwks().verify_token("").unwrap_err();
        assert_eq!(err.reason(), "TOKEN_MALFORMED");
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let auth = hs();
        let text = format!("{auth:?}");
        let secret = String::from_utf8(secret()).unwrap();
        assert!(!text.contains(&secret[..16]), "{text}");
        assert!(text.contains("redacted"), "{text}");
        let text = format!("{:?}", jwks());
        assert!(text.contains("rsa-1") && text.contains("ES256"), "{text}");
    }

    fn setup_error(keys: KeySource) -> AuthSetupError {
        Authenticator::from_config(&config(keys)).unwrap_err()
    }

    #[test]
    fn setup_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };

        let missing = dir.path().join("nope.json");
        let err = setup_error(KeySource::Jwks(missing.clone()));
        assert!(matches!(err, AuthSetupError::Read { .. }), "{err}");
        assert!(err.to_string().contains("nope.json"), "{err}");
        let err = setup_error(KeySource::Hs256SecretFile(missing));
        assert!(matches!(err, AuthSetupError::Read { .. }), "{err}");

        let short = "0123456789abcdef0123456789abcde\n\n";
        let err = setup_error(KeySource::Hs256SecretFile(file("short", short)));
        assert!(
            matches!(err, AuthSetupError::SecretTooShort { len: 31, .. }),
            "{err}"
        );
        assert!(!err.to_string().contains("0123456789"), "{err}");
        let err = setup_error(KeySource::Hs256SecretFile(file("empty", "")));
        assert!(
            matches!(err, AuthSetupError::SecretTooShort { len: 0, .. }),
            "{err}"
        );

        for bad in [
            "not json",
            "[]",
            r#"{"keys": {}}"#,
            r#"{"keys": [{"kid": 5}]}"#,
        ] {
            let err = setup_error(KeySource::Jwks(file("bad.json", bad)));
            assert!(
                matches!(err, AuthSetupError::InvalidJwks { .. }),
                "{bad}: {err}"
            );
        }

        let unusable = r#"{"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AA"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "AQAB", "e": "AQAB"}
        ]}"#;
        let err = setup_error(KeySource::Jwks(file("unusable.json", unusable)));
        assert!(matches!(err, AuthSetupError::NoUsableKey { .. }), "{err}");
        let err = setup_error(KeySource::Jwks(file("none.json", r#"{"keys": []}"#)));
        assert!(matches!(err, AuthSetupError::NoUsableKey { .. }), "{err}");

        // Unusable keys beside a good one are skipped.
        let good: Value =
            serde_json::from_slice(&std::fs::read(fixtures().join("jwks.json")).unwrap()).unwrap();
        let mut mixed: Value = serde_json::from_str(unusable).unwrap();
        mixed["keys"]
            .as_array_mut()
            .unwrap()
            .push(good["keys"][1].clone());
        let path = file("mixed.json", &mixed.to_string());
        let auth = Authenticator::from_config(&config(KeySource::Jwks(path))).unwrap();
        auth.verify_token(&token(fixtures(), "ec-1", &base()))
            .unwrap();
        let err = auth
            .verify_token(&token(fixtures(), "rsa-1", &base()))
            .unwrap_err();
        assert_eq!(err.reason(), "UNKNOWN_KEY_ID");

        // A supported key with bad material, or a repeated kid, is an error.
        let mut rsa = good["keys"][0].clone();
        let edits: [(&str, Value); 4] = [
            ("n", json!("AQAB")),
            ("n", json!("not base64!")),
            ("e", json!("AA")),
            ("e", Value::Null),
        ];
        for (field, value) in edits {
            let mut key = rsa.clone();
            key[field] = value;
            let path = file("badkey.json", &json!({ "keys": [key] }).to_string());
            let err = setup_error(KeySource::Jwks(path));
            assert!(
                matches!(err, AuthSetupError::InvalidJwks { .. }),
                "{field}: {err}"
            );
        }
        let twice = json!({ "keys": [rsa.clone(), rsa.clone()] }).to_string();
        let err = setup_error(KeySource::Jwks(file("twice.json", &twice)));
        assert!(matches!(err, AuthSetupError::InvalidJwks { .. }), "{err}");
        let mut ec = good["keys"][1].clone();
        ec["x"] = json!("AAAA");
        let path = file("badec.json", &json!({ "keys": [ec] }).to_string());
        let err = setup_error(KeySource::Jwks(path));
        assert!(matches!(err, AuthSetupError::InvalidJwks { .. }), "{err}");
        rsa["n"] = json!(format!("{}=", rsa["n"].as_str().unwrap()));
        let path = file("padded.json", &json!({ "keys": [rsa] }).to_string());
        let err = setup_error(KeySource::Jwks(path));
        assert!(matches!(err, AuthSetupError::InvalidJwks { .. }), "{err}");

        let jwks_path = fixtures().join("jwks.json");
        for (issuer, audience, leeway) in [
            ("", AUDIENCE, 30),
            (" ", AUDIENCE, 30),
            (ISSUER, "", 30),
            (ISSUER, AUDIENCE, MAX_LEEWAY_SECS + 1),
        ] {
            let cfg = AuthConfig {
                keys: KeySource::Jwks(jwks_path.clone()),
                issuer: issuer.into(),
                audience: audience.into(),
                leeway_secs: leeway,
            };
            let err = Authenticator::from_config(&cfg).unwrap_err();
            assert!(
                matches!(
                    err,
                    AuthSetupError::EmptySetting { .. } | AuthSetupError::LeewayTooLarge { .. }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn dev_secret_is_created_once_privately_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.secret");
        let first = ensure_dev_secret(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.iter().all(u8::is_ascii_hexdigit));
        assert_eq!(ensure_dev_secret(&path).unwrap(), first);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let auth =
            Authenticator::from_config(&config(KeySource::Hs256SecretFile(path.clone()))).unwrap();
        let t = mint_hs256(&first, &base()).unwrap();
        assert_eq!(auth.verify_token(&t).unwrap().subject, "customer-42");

        let other = dir.path().join("other.secret");
        assert_ne!(ensure_dev_secret(&other).unwrap(), first);

        std::fs::write(&path, "short\n").unwrap();
        let err = ensure_dev_secret(&path).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(!err.to_string().contains("short\n"));
    }

    #[test]
    fn every_reason_is_screaming_snake() {
        let errors = [
            AuthError::Missing,
            AuthError::TooLarge { limit: 1 },
            AuthError::BadHeader { problem: "" },
            AuthError::Malformed { problem: "" },
            AuthError::AlgorithmNotAllowed { allowed: "" },
            AuthError::MissingKeyId,
            AuthError::UnknownKeyId,
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::WrongIssuer,
            AuthError::WrongAudience,
            AuthError::MissingClaim { claim: "sub" },
            AuthError::InvalidClaim {
                claim: "sub",
                problem: "",
            },
            AuthError::BadRole,
        ];
        for e in errors {
            let r = e.reason();
            assert!(
                !r.is_empty() && r.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{r}"
            );
        }
    }
}
