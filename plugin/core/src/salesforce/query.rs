//! The order query: one SOQL query for every activated order of a message, its path, and its
//! pages read with serde derive into structs that borrow from the reply (no `Value` tree, no
//! key copies), then turned into the flow's [`Order`]s.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{BorrowedStr, SalesforceError};
use crate::config::{ContactField, Issuing};
use crate::ids::SfId;
use crate::license::Customer;
use crate::text::excerpt;

/// Which fields the query reads beyond the fixed ones: all from validated configuration.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    pub contact: ContactField,
    /// The write-back field: a line whose keys Salesforce holds is done.
    pub writeback: Option<&'a str>,
    /// The state field (`Revoked` there means an activated order restores the keys).
    pub state: Option<&'a str>,
    /// The renewal lookup field of a renewal line.
    pub renewal: Option<&'a str>,
    /// `IsReductionOrder` and the reduced line (`OriginalOrderItem`): only orgs with reduction
    /// orders enabled have these fields, so they are asked for only when configured.
    pub reductions: bool,
}

impl<'a> Fields<'a> {
    pub fn of(i: &'a Issuing) -> Fields<'a> {
        Fields {
            contact: i.salesforce.contact,
            writeback: i.salesforce.writeback_field.as_deref(),
            state: i.salesforce.state_field.as_deref(),
            renewal: i.lifecycle.renewal_field.as_deref(),
            reductions: i.lifecycle.reductions,
        }
    }

    /// The fields the contact and the write-back field alone name.
    pub fn basic(contact: ContactField, writeback: Option<&'a str>) -> Fields<'a> {
        Fields {
            contact,
            writeback,
            state: None,
            renewal: None,
            reductions: false,
        }
    }
}

/// One query for every order of a message. Ids are [`SfId`]s (letters and digits only), so
/// quoting them cannot be escaped; the field names come from validated config.
pub fn build_soql(ids: &[SfId], f: &Fields<'_>) -> String {
    let c = f.contact.relationship();
    let mut soql = format!(
        "SELECT Id, OrderNumber, Status, Account.Name, {c}Id, {c}.FirstName, {c}.LastName, \
         {c}.Email, {c}.Phone, "
    );
    if f.reductions {
        soql.push_str("IsReductionOrder, ");
    }
    soql.push_str("(SELECT Id, Quantity, Product2.ProductCode, Product2.Name");
    if f.reductions {
        soql.push_str(
            ", OriginalOrderItemId, OriginalOrderItem.Quantity, OriginalOrderItem.AvailableQuantity",
        );
    }
    for name in [f.writeback, f.state, f.renewal].into_iter().flatten() {
        soql.push_str(", ");
        soql.push_str(name);
    }
    soql.push_str(" FROM OrderItems) FROM Order WHERE Id IN (");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            soql.push(',');
        }
        soql.push('\'');
        soql.push_str(id.as_str());
        soql.push('\'');
    }
    soql.push(')');
    soql
}

pub fn query_path(api_version: &str, soql: &str) -> String {
    let q: String = form_urlencoded::byte_serialize(soql.as_bytes()).collect();
    format!("/services/data/{api_version}/query?q={q}")
}

/// `nextRecordsUrl` becomes a `:path`: accept only a plain Salesforce data path.
pub fn checked_next_url(url: &str) -> Option<&str> {
    let ok = url.starts_with("/services/data/")
        && url.len() < 512
        && url
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_'));
    ok.then_some(url)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: SfId,
    pub order_number: String,
    pub status: String,
    /// `Account.Name`: the licensee's company, also when the order has no contact.
    pub company: String,
    /// The configured contact; `None` when the lookup is empty.
    pub customer: Option<Customer>,
    /// `IsReductionOrder` (read only with `lifecycle.reductions`).
    pub is_reduction: bool,
    pub items: Vec<OrderItem>,
    /// Where the rest of the order's lines are when Salesforce paginated the OrderItems subquery.
    pub items_next: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderItem {
    pub id: SfId,
    pub quantity: f64,
    pub product_code: Option<String>,
    pub product_name: Option<String>,
    /// Current value of the write-back field (trimmed, `None` when empty).
    pub written_back: Option<String>,
    /// Current value of the state field (trimmed, `None` when empty).
    pub state: Option<String>,
    /// The line a renewal line renews (the renewal field).
    pub renews: Option<SfId>,
    /// The line a reduction line reduces (`OriginalOrderItem`).
    pub original: Option<OriginalItem>,
}

/// The original order product a reduction line reduces.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginalItem {
    pub id: SfId,
    pub quantity: f64,
    /// `AvailableQuantity`: what is left after the reductions Salesforce has counted.
    pub available: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    pub orders: Vec<Order>,
    pub next_records_url: Option<String>,
}

/// A further page of one order's OrderItems subquery.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemsPage {
    pub items: Vec<OrderItem>,
    pub next_records_url: Option<String>,
}

// ---- the reply as Salesforce sends it ----------------------------------------------------------

// Read with `json_object!` (derive's reading, less its JSON-array path); every field is optional.

struct PageJson<'a> {
    done: bool,
    next_records_url: Option<BorrowedStr<'a>>,
    records: Option<Vec<OrderJson<'a>>>,
}
json_object!(PageJson<'a>, "a query reply", {
    "done" => done,
    "nextRecordsUrl" => next_records_url,
    "records" => records,
});

/// A reply without `done` is complete.
impl Default for PageJson<'_> {
    fn default() -> Self {
        PageJson {
            done: true,
            next_records_url: None,
            records: None,
        }
    }
}

#[derive(Default)]
struct OrderJson<'a> {
    id: Option<BorrowedStr<'a>>,
    order_number: Option<BorrowedStr<'a>>,
    status: Option<BorrowedStr<'a>>,
    account: Option<AccountJson<'a>>,
    // Both contact relationships the configuration can name; the query selects one.
    bill_to_contact: Option<ContactJson<'a>>,
    customer_authorized_by: Option<ContactJson<'a>>,
    is_reduction_order: Option<bool>,
    /// A parent-to-child subquery with no children may come back as null.
    order_items: Option<SubqueryJson<'a>>,
}
json_object!(OrderJson<'a>, "an Order record", {
    "Id" => id,
    "OrderNumber" => order_number,
    "Status" => status,
    "Account" => account,
    "BillToContact" => bill_to_contact,
    "CustomerAuthorizedBy" => customer_authorized_by,
    "IsReductionOrder" => is_reduction_order,
    "OrderItems" => order_items,
});

#[derive(Default)]
struct AccountJson<'a> {
    name: Option<BorrowedStr<'a>>,
}
json_object!(AccountJson<'a>, "an Account", { "Name" => name });

#[derive(Default)]
struct ContactJson<'a> {
    first_name: Option<BorrowedStr<'a>>,
    last_name: Option<BorrowedStr<'a>>,
    email: Option<BorrowedStr<'a>>,
    phone: Option<BorrowedStr<'a>>,
}
json_object!(ContactJson<'a>, "a Contact", {
    "FirstName" => first_name,
    "LastName" => last_name,
    "Email" => email,
    "Phone" => phone,
});

/// The OrderItems subquery inside an order, and also a further page of it (same shape).
struct SubqueryJson<'a> {
    done: bool,
    next_records_url: Option<BorrowedStr<'a>>,
    records: Option<Vec<ItemJson<'a>>>,
}
json_object!(SubqueryJson<'a>, "an OrderItems subquery", {
    "done" => done,
    "nextRecordsUrl" => next_records_url,
    "records" => records,
});

impl Default for SubqueryJson<'_> {
    fn default() -> Self {
        SubqueryJson {
            done: true,
            next_records_url: None,
            records: None,
        }
    }
}

#[derive(Default)]
struct ProductJson<'a> {
    product_code: Option<BorrowedStr<'a>>,
    name: Option<BorrowedStr<'a>>,
}
json_object!(ProductJson<'a>, "a Product2", { "ProductCode" => product_code, "Name" => name });

/// An OrderItem record. Its write-back, state and renewal fields have configured names, which
/// a fixed key list cannot know: the known fields are read as such and every other one is kept
/// as a [`FieldValue`] for [`ItemJson::field`] (by hand, below).
#[derive(Default)]
struct ItemJson<'a> {
    id: Option<BorrowedStr<'a>>,
    quantity: Option<f64>,
    product: Option<ProductJson<'a>>,
    original_id: Option<BorrowedStr<'a>>,
    original: Option<OriginalJson>,
    other: Vec<(Cow<'a, str>, FieldValue<'a>)>,
}

#[derive(Default)]
struct OriginalJson {
    quantity: Option<f64>,
    available_quantity: Option<f64>,
}
json_object!(OriginalJson, "an OriginalOrderItem", {
    "Quantity" => quantity,
    "AvailableQuantity" => available_quantity,
});

impl<'a> ItemJson<'a> {
    /// A string field other than the known ones (`None` when absent or null). Field names are
    /// case-insensitive in Salesforce: the reply spells them as the schema does, not as the query.
    fn field(&self, name: &str) -> Result<Option<&str>, SalesforceError> {
        match self
            .other
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some((_, FieldValue::Text(s))) => Ok(Some(s)),
            Some((_, FieldValue::Null)) | None => Ok(None),
            Some((_, FieldValue::NotText)) => Err(SalesforceError::Unparseable(format!(
                "query reply: field {} is not a string",
                excerpt(name)
            ))),
        }
    }
}

/// The value of an OrderItem field the query did not name statically: only a string is ever
/// read from one, so anything else is skipped unread. (Not `RawValue`: with `Value` in the
/// .wasm for the configuration, serde_json's `raw_value` feature links a second copy of its
/// parser.)
enum FieldValue<'a> {
    Text(Cow<'a, str>),
    Null,
    NotText,
}

impl<'de: 'a, 'a> Deserialize<'de> for FieldValue<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = FieldValue<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field value")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                s: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(FieldValue::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(FieldValue::Text(Cow::Owned(s.to_owned())))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(FieldValue::Null)
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(FieldValue::NotText)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(FieldValue::NotText)
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(FieldValue::NotText)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(FieldValue::NotText)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FieldValue::NotText)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(FieldValue::NotText)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ItemJson<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = ItemJson<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an OrderItem record")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut item = ItemJson::default();
                while let Some(BorrowedStr(key)) = map.next_key()? {
                    match key.as_ref() {
                        "Id" => item.id = map.next_value()?,
                        "Quantity" => item.quantity = map.next_value()?,
                        "Product2" => item.product = map.next_value()?,
                        "OriginalOrderItemId" => item.original_id = map.next_value()?,
                        "OriginalOrderItem" => item.original = map.next_value()?,
                        "attributes" => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        _ => item.other.push((key, map.next_value()?)),
                    }
                }
                Ok(item)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

// ---- into the flow's model ---------------------------------------------------------------------

fn owned(s: Option<BorrowedStr<'_>>) -> String {
    s.map(|s| s.0.into_owned()).unwrap_or_default()
}

pub fn parse_query(
    status: u16,
    body: &[u8],
    fields: &Fields<'_>,
) -> Result<QueryPage, SalesforceError> {
    let page: PageJson<'_> = super::read_reply(status, body, "query reply")?;
    let records = page
        .records
        .ok_or_else(|| SalesforceError::Unparseable("query reply has no records".into()))?;
    let next_records_url = next_page(page.done, page.next_records_url.as_deref())?;
    let mut orders = Vec::with_capacity(records.len());
    for r in records {
        orders.push(order(r, fields)?);
    }
    Ok(QueryPage {
        orders,
        next_records_url,
    })
}

/// The next page's path when `done` is false.
fn next_page(done: bool, url: Option<&str>) -> Result<Option<String>, SalesforceError> {
    if done {
        return Ok(None);
    }
    let url = url.unwrap_or("");
    match checked_next_url(url) {
        Some(u) => Ok(Some(u.to_owned())),
        None => Err(SalesforceError::Unparseable(format!(
            "bad nextRecordsUrl {}",
            excerpt(url)
        ))),
    }
}

/// A further page of an order's OrderItems (what its `nextRecordsUrl` answers).
pub fn parse_items_page(
    status: u16,
    body: &[u8],
    fields: &Fields<'_>,
) -> Result<ItemsPage, SalesforceError> {
    let page: SubqueryJson<'_> = super::read_reply(status, body, "order products page")?;
    let (items, next_records_url) = items_of(page, fields)?;
    Ok(ItemsPage {
        items,
        next_records_url,
    })
}

type Items = (Vec<OrderItem>, Option<String>);

fn items_of(sub: SubqueryJson<'_>, fields: &Fields<'_>) -> Result<Items, SalesforceError> {
    let recs = sub
        .records
        .ok_or_else(|| SalesforceError::Unparseable("OrderItems has no records".into()))?;
    let mut items = Vec::with_capacity(recs.len());
    for it in recs {
        items.push(item(it, fields)?);
    }
    Ok((items, next_page(sub.done, sub.next_records_url.as_deref())?))
}

fn order(r: OrderJson<'_>, fields: &Fields<'_>) -> Result<Order, SalesforceError> {
    let id_raw = r.id.as_deref().unwrap_or("");
    let id = SfId::parse(id_raw).ok_or_else(|| {
        SalesforceError::Unparseable(format!("order id {} is not valid", excerpt(id_raw)))
    })?;
    let company = owned(r.account.and_then(|a| a.name));
    let person = match fields.contact {
        ContactField::BillToContact => r.bill_to_contact,
        ContactField::CustomerAuthorizedBy => r.customer_authorized_by,
    };
    let customer = person.map(|c| {
        let first = c.first_name.as_deref().unwrap_or("");
        let last = c.last_name.as_deref().unwrap_or("");
        Customer {
            full_name: format!("{first} {last}").trim().to_owned(),
            email: owned(c.email),
            company: company.clone(),
            phone: owned(c.phone),
        }
    });
    let (items, items_next) = match r.order_items {
        None => (Vec::new(), None),
        Some(sub) => items_of(sub, fields)?,
    };
    Ok(Order {
        id,
        order_number: owned(r.order_number),
        status: owned(r.status),
        company,
        customer,
        is_reduction: r.is_reduction_order.unwrap_or(false),
        items,
        items_next,
    })
}

fn item(it: ItemJson<'_>, fields: &Fields<'_>) -> Result<OrderItem, SalesforceError> {
    let id_raw = it.id.as_deref().unwrap_or("");
    let id = SfId::parse(id_raw).ok_or_else(|| {
        SalesforceError::Unparseable(format!("order item id {} is not valid", excerpt(id_raw)))
    })?;
    let text = |name: Option<&str>| -> Result<Option<String>, SalesforceError> {
        let Some(name) = name else { return Ok(None) };
        Ok(it
            .field(name)?
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned))
    };
    let written_back = text(fields.writeback)?;
    let state = text(fields.state)?;
    let renews = text(fields.renewal)?
        .map(|r| {
            SfId::parse(&r).ok_or_else(|| {
                SalesforceError::Unparseable(format!(
                    "renewed line id {} is not valid",
                    excerpt(&r)
                ))
            })
        })
        .transpose()?;
    // Only asked for with `reductions`; a reply that has it regardless is not read for it.
    let original_id = it.original_id.as_deref().filter(|_| fields.reductions);
    let original = match (original_id, it.original) {
        (Some(raw), o) => {
            let id = SfId::parse(raw).ok_or_else(|| {
                SalesforceError::Unparseable(format!(
                    "original line id {} is not valid",
                    excerpt(raw)
                ))
            })?;
            let o = o.unwrap_or_default();
            Some(OriginalItem {
                id,
                quantity: o.quantity.unwrap_or(0.0),
                available: o.available_quantity,
            })
        }
        (None, _) => None,
    };
    let (code, name) = it
        .product
        .map_or((None, None), |p| (p.product_code, p.name));
    Ok(OrderItem {
        id,
        quantity: it.quantity.unwrap_or(0.0),
        product_code: code.map(|c| c.0.into_owned()),
        product_name: name.map(|n| n.0.into_owned()),
        written_back,
        state,
        renews,
        original,
    })
}
