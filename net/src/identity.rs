//! Identities and their tokens.
//!
//! A client that connects without a token is given a new [`Identity`] (32 random bytes)
//! and a token for it: an HS256 JWT whose subject is the identity in hex, signed with
//! the server's key. With that token it comes back as the same identity. The key is
//! made on the server's first start and kept in the data directory (`server.key`,
//! readable by its owner only), so tokens outlive restarts; anyone holding the key can
//! mint any identity, so it never leaves the server.

use std::io::Read;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use tickdb_wasm_abi::{ConnectionId, Identity};

const ISSUER: &str = "tickdb";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    iat: u64,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token's subject is not an identity")]
    BadSubject,
}

/// The server's signing key.
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// `n` bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut out))
        .expect("the operating system provides /dev/urandom");
    out
}

impl Keys {
    /// The key kept at `path`, made there (owner-only, written atomically) if missing.
    pub fn load_or_create(path: &Path) -> std::io::Result<Keys> {
        let secret = match std::fs::read(path) {
            Ok(secret) if secret.len() == 32 => secret,
            Ok(_) => {
                let why = format!("{} is damaged: a server key is 32 bytes", path.display());
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = random_bytes::<32>().to_vec();
                write_private(path, &secret)?;
                secret
            }
            Err(e) => return Err(e),
        };
        Ok(Keys::from_secret(&secret))
    }

    pub fn from_secret(secret: &[u8]) -> Keys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["iss", "sub"]);
        validation.validate_exp = false;
        Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// A new identity and its token.
    pub fn new_identity(&self) -> (Identity, String) {
        let identity = Identity(random_bytes());
        (identity, self.token(identity))
    }

    /// The token for `identity`.
    pub fn token(&self, identity: Identity) -> String {
        let iat =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let claims = Claims { iss: ISSUER.into(), sub: identity.to_string(), iat };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// The identity a token was made for, if this server signed it.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        parse_identity(&data.claims.sub).ok_or(TokenError::BadSubject)
    }
}

/// An identity from its 64 hex digits.
pub fn parse_identity(hex: &str) -> Option<Identity> {
    crate::json::unhex(hex).and_then(|bytes| bytes.try_into().ok()).map(Identity)
}

/// A fresh connection id.
pub fn new_connection_id() -> ConnectionId {
    ConnectionId(random_bytes())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().expect("files live in directories");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
