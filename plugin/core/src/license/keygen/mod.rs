//! Keygen's JSON:API behind the license-backend seam ([`Keygen`]): what each call asks (this
//! file) and what its reply means (`replies`). Every path is under `/v1/accounts/{account}` (the
//! same on a self-hosted server), every call carries the token as `Authorization: Bearer` and
//! asks for `application/vnd.api+json`.
//!
//! How keygate's order life maps onto Keygen (`../shared/reference/keygen.md`):
//! - issue: `POST /licenses` under the product's policy, with the line's OrderItem id, order
//!   number and contact in `metadata` (one license per line; `maxMachines` is the Quantity when
//!   the product says `seats: "quantity"`);
//! - lookup: `GET /licenses?metadata[salesforceOrderItemId]=…` (metadata keys are sent
//!   lowerCamelCased, as Keygen stores them);
//! - cancel / reactivate: the `suspend` / `reinstate` actions (Keygen's 422 "already" is done);
//! - reduction: `PATCH` of `maxMachines`;
//! - renewal: the `renew` action, which adds the policy's duration on every call. It is made
//!   once exactly as QLM's `is_expduration` renewal is: the expiry is read and recorded with the
//!   write-ahead mark, and a redelivery that finds it moved knows the renewal was applied. The
//!   alternative, a `PATCH` of an absolute `expiry`, would be idempotent but would copy the
//!   policy's duration and renewal basis into keygate's configuration, where they could drift
//!   from Keygen's; the policy stays the one source of the term.
//!
//! A key names its license in a path (Keygen takes the id or the key): the ledger keeps keys.

mod replies;

pub use replies::{read_policy, KEYGEN_MEDIA_TYPE};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;

use crate::config::KeygenConfig;
use crate::license::{
    HttpRequest, IssueRequest, KeyChange, LicenseBackend, LicenseError, LicenseReply,
};

/// The metadata key a line's OrderItem id is stored and looked up under.
pub const LINE_REFERENCE_KEY: &str = "salesforceOrderItemId";
/// Licenses per lookup page: Keygen's largest page (a line has one license).
const LOOKUP_PAGE_SIZE: u32 = 100;

/// What is left as it is in a path segment or a query value: RFC 3986's unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Keygen as the flow's license server.
pub struct Keygen<'a> {
    pub cfg: &'a KeygenConfig,
}

impl Keygen<'_> {
    fn path(&self, rest: &str) -> String {
        format!("/v1/accounts/{}{rest}", self.cfg.account)
    }

    fn license_path(&self, key: &str, rest: &str) -> String {
        self.path(&format!(
            "/licenses/{}{rest}",
            utf8_percent_encode(key, UNRESERVED)
        ))
    }

    fn request(&self, verb: &'static str, path: String, body: Option<Vec<u8>>) -> HttpRequest {
        let mut headers = vec![
            (
                "authorization",
                format!("Bearer {}", self.cfg.token.expose()),
            ),
            ("accept", KEYGEN_MEDIA_TYPE.to_owned()),
        ];
        if body.is_some() {
            headers.push(("content-type", KEYGEN_MEDIA_TYPE.to_owned()));
        }
        HttpRequest {
            verb,
            path,
            headers,
            body: body.unwrap_or_default(),
        }
    }

    /// `GET /me`: whom the token belongs to (the start-up self-check: the token is valid and the
    /// account reachable).
    pub fn me(&self) -> HttpRequest {
        self.request("GET", self.path("/me"), None)
    }

    /// `GET /policies/{id}`: the policy a product maps to exists (the start-up self-check).
    pub fn policy(&self, id: &str) -> HttpRequest {
        let path = self.path(&format!(
            "/policies/{}",
            utf8_percent_encode(id, UNRESERVED)
        ));
        self.request("GET", path, None)
    }
}

/// `{"data": …}`: a JSON:API document.
#[derive(Serialize)]
struct Document<T> {
    data: T,
}

/// A license to create.
#[derive(Serialize)]
struct NewLicense<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    attributes: NewAttributes<'a>,
    relationships: Relationships<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NewAttributes<'a> {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_machines: Option<u32>,
    metadata: LineMetadata<'a>,
}

/// What Keygen keeps about the line, lowerCamelCased as Keygen stores metadata keys (so the
/// lookup's filter names the key as stored).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LineMetadata<'a> {
    /// [`LINE_REFERENCE_KEY`].
    salesforce_order_item_id: &'a str,
    salesforce_order_number: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    contact_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    contact_email: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    company: &'a str,
}

#[derive(Serialize)]
struct Relationships<'a> {
    policy: Relationship<'a>,
}

#[derive(Serialize)]
struct Relationship<'a> {
    data: ResourceId<'a>,
}

#[derive(Serialize)]
struct ResourceId<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
}

/// A change of a license's seats.
#[derive(Serialize)]
struct SeatsChange {
    #[serde(rename = "type")]
    kind: &'static str,
    attributes: Seats,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Seats {
    max_machines: u32,
}

/// A document as bytes. Serialising these plain structs cannot fail; `None` if it ever did.
fn body<T: Serialize>(data: T) -> Option<Vec<u8>> {
    serde_json::to_vec(&Document { data }).ok()
}

impl LicenseBackend for Keygen<'_> {
    fn issue(&self, req: &IssueRequest<'_>, _now_ms: u64) -> HttpRequest {
        // The configuration maps every product to the configured server's terms.
        let terms = req.product.keygen();
        let license = NewLicense {
            kind: "licenses",
            attributes: NewAttributes {
                name: format!("Salesforce order {}", req.order_number),
                max_machines: terms
                    .filter(|t| t.seats_from_quantity)
                    .map(|_| req.quantity),
                metadata: LineMetadata {
                    salesforce_order_item_id: req.order_item_id.as_str(),
                    salesforce_order_number: req.order_number,
                    contact_name: &req.customer.full_name,
                    contact_email: &req.customer.email,
                    company: &req.customer.company,
                },
            },
            relationships: Relationships {
                policy: Relationship {
                    data: ResourceId {
                        kind: "policies",
                        id: terms.map_or("", |t| t.policy.as_str()),
                    },
                },
            },
        };
        self.request("POST", self.path("/licenses"), body(license))
    }

    fn lookup(&self, reference: &str, _now_ms: u64) -> HttpRequest {
        let path = self.path(&format!(
            "/licenses?metadata%5B{LINE_REFERENCE_KEY}%5D={}&page%5Bsize%5D={LOOKUP_PAGE_SIZE}&page%5Bnumber%5D=1",
            utf8_percent_encode(reference, UNRESERVED)
        ));
        self.request("GET", path, None)
    }

    fn change(&self, key: &str, change: KeyChange<'_>, _now_ms: u64) -> HttpRequest {
        match change {
            KeyChange::Revoke => {
                self.request("POST", self.license_path(key, "/actions/suspend"), None)
            }
            KeyChange::Restore => {
                self.request("POST", self.license_path(key, "/actions/reinstate"), None)
            }
            KeyChange::Renew(_) => {
                self.request("POST", self.license_path(key, "/actions/renew"), None)
            }
            KeyChange::SetQuantity(n) => {
                let seats = SeatsChange {
                    kind: "licenses",
                    attributes: Seats { max_machines: n },
                };
                self.request("PATCH", self.license_path(key, ""), body(seats))
            }
        }
    }

    fn read_expiry(&self, key: &str, _now_ms: u64) -> HttpRequest {
        self.request("GET", self.license_path(key, ""), None)
    }

    fn reply_headers(&self) -> &'static [&'static str] {
        replies::HEADERS
    }

    fn issued(&self, reply: &LicenseReply<'_>) -> Result<Vec<String>, LicenseError> {
        let license = replies::one(reply, self.cfg, Addressed::Account)?;
        Ok(vec![license.attributes.key])
    }

    fn found(&self, reply: &LicenseReply<'_>) -> Result<Vec<String>, LicenseError> {
        let list = replies::many(reply, self.cfg)?;
        Ok(list.into_iter().map(|l| l.attributes.key).collect())
    }

    fn change_applied(
        &self,
        change: &KeyChange<'_>,
        reply: &LicenseReply<'_>,
    ) -> Result<(), LicenseError> {
        match replies::one(reply, self.cfg, Addressed::Key) {
            Ok(_) => Ok(()),
            // Suspending a suspended license (or reinstating one that is not) is refused with
            // a 422 that says so: the key already is as the change asks.
            Err(_) if replies::already(change, reply) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn expiry(&self, reply: &LicenseReply<'_>) -> Result<Option<String>, LicenseError> {
        replies::one(reply, self.cfg, Addressed::Key).map(|l| l.attributes.expiry)
    }

    fn name_of(&self, change: &KeyChange<'_>) -> &'static str {
        match change {
            KeyChange::Revoke => "suspend",
            KeyChange::Restore => "reinstate",
            KeyChange::SetQuantity(_) => "maxMachines update",
            KeyChange::Renew(_) => "renew",
        }
    }

    fn refusal_hint(&self, change: &KeyChange<'_>) -> String {
        match change {
            KeyChange::Renew(_) => {
                "Keygen renews by the license's policy: does the policy have a duration?".to_owned()
            }
            KeyChange::SetQuantity(_) => {
                "does the license's policy allow a maxMachines change (a floating policy)?"
                    .to_owned()
            }
            KeyChange::Revoke | KeyChange::Restore => format!(
                "may the token in {} suspend and reinstate this product's licenses?",
                self.cfg.token_env
            ),
        }
    }
}

/// What a call's path names: a 404 on a key means the key is unknown; on the account's
/// collection, that the account is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Addressed {
    Account,
    Key,
}
