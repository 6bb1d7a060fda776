//! OAuth 2.0 login: the token request for the configured grant and the token endpoint's reply.

use serde::Deserialize;

use super::SalesforceError;
use crate::config::{Grant, SalesforceConfig};
use crate::secret::Secret;
use crate::text::excerpt;

pub const TOKEN_PATH: &str = "/services/oauth2/token";

/// The shared-data key of the Salesforce token every worker uses (the flow's logins and the
/// start-up self-check's store it there).
pub fn token_key(state_prefix: &str) -> String {
    format!("{state_prefix}:sf_token")
}

/// The form body of a token request for the configured grant.
pub fn token_request_body(cfg: &SalesforceConfig) -> String {
    let mut form = form_urlencoded::Serializer::new(String::with_capacity(256));
    match &cfg.grant {
        Grant::ClientCredentials {
            client_id,
            client_secret,
        } => {
            form.append_pair("grant_type", "client_credentials");
            form.append_pair("client_id", client_id.expose());
            form.append_pair("client_secret", client_secret.expose());
        }
        Grant::Password {
            client_id,
            client_secret,
            username,
            password,
        } => {
            form.append_pair("grant_type", "password");
            form.append_pair("client_id", client_id.expose());
            form.append_pair("client_secret", client_secret.expose());
            form.append_pair("username", username.expose());
            form.append_pair("password", password.expose());
        }
    }
    form.finish()
}

/// An access token and where to use it.
#[derive(Debug, Clone)]
pub struct Token {
    pub access_token: Secret,
    /// `host[:port]` of `instance_url`: the `:authority` of REST calls.
    pub instance_authority: String,
}

impl Token {
    /// Serialized for proxy-wasm shared data, so one login serves every worker.
    pub fn to_shared(&self) -> Vec<u8> {
        format!(
            "{}\n{}",
            self.instance_authority,
            self.access_token.expose()
        )
        .into_bytes()
    }

    pub fn from_shared(bytes: &[u8]) -> Option<Token> {
        let s = std::str::from_utf8(bytes).ok()?;
        let (authority, token) = s.split_once('\n')?;
        if authority.is_empty() || token.is_empty() {
            return None;
        }
        Some(Token {
            access_token: Secret::new(token.to_owned()),
            instance_authority: authority.to_owned(),
        })
    }
}

/// The token endpoint's JSON, success and error fields together.
#[derive(Deserialize)]
struct TokenReply {
    access_token: Option<String>,
    instance_url: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Parse a token endpoint reply. There is no `expires_in`: expiry shows up later as a 401.
pub fn parse_token(status: u16, body: &[u8]) -> Result<Token, SalesforceError> {
    let success = (200..300).contains(&status);
    let reply: TokenReply = serde_json::from_slice(body).map_err(|_| {
        if success {
            SalesforceError::Unparseable("token reply is not JSON".into())
        } else {
            SalesforceError::Status {
                status,
                error_code: String::new(),
            }
        }
    })?;
    if !success {
        return Err(match reply.error {
            Some(e) => SalesforceError::LoginRefused {
                error: excerpt(&e),
                description: excerpt(reply.error_description.as_deref().unwrap_or("")),
            },
            None => SalesforceError::Status {
                status,
                error_code: String::new(),
            },
        });
    }
    let token = reply
        .access_token
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| SalesforceError::Unparseable("token reply has no access_token".into()))?;
    let instance = reply
        .instance_url
        .ok_or_else(|| SalesforceError::Unparseable("token reply has no instance_url".into()))?;
    let instance_authority = authority_of(&instance).ok_or_else(|| {
        SalesforceError::Unparseable(format!(
            "instance_url {} is not an http(s) URL",
            excerpt(&instance)
        ))
    })?;
    Ok(Token {
        access_token: Secret::new(token),
        instance_authority,
    })
}

/// `https://host[:port][/…]` → `host[:port]`, refusing anything that could smuggle a header.
fn authority_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split('/').next()?;
    let ok = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then(|| authority.to_owned())
}
