//! The order query: one SOQL query for every activated order of a message, its path, and its
//! pages read with serde derive, then turned into the flow's [`Order`]s.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::SalesforceError;
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

// Read with serde derive: every field is optional (absent and null read the same), every other
// key is ignored.

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageJson {
    /// A reply without `done` is complete.
    #[serde(default = "yes")]
    done: bool,
    next_records_url: Option<String>,
    records: Option<Vec<OrderJson>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OrderJson {
    id: Option<String>,
    order_number: Option<String>,
    status: Option<String>,
    account: Option<AccountJson>,
    // Both contact relationships the configuration can name; the query selects one.
    bill_to_contact: Option<ContactJson>,
    customer_authorized_by: Option<ContactJson>,
    is_reduction_order: Option<bool>,
    /// A parent-to-child subquery with no children may come back as null.
    order_items: Option<SubqueryJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AccountJson {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContactJson {
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
}

/// The OrderItems subquery inside an order, and also a further page of it (same shape).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubqueryJson {
    #[serde(default = "yes")]
    done: bool,
    next_records_url: Option<String>,
    records: Option<Vec<ItemJson>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProductJson {
    product_code: Option<String>,
    name: Option<String>,
}

/// An OrderItem record. Its write-back, state and renewal fields have configured names, which
/// a fixed struct cannot know: the known fields are read as such and every other one is kept
/// in `other` for [`ItemJson::field`].
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ItemJson {
    id: Option<String>,
    quantity: Option<f64>,
    #[serde(rename = "Product2")]
    product: Option<ProductJson>,
    original_order_item_id: Option<String>,
    original_order_item: Option<OriginalJson>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct OriginalJson {
    quantity: Option<f64>,
    available_quantity: Option<f64>,
}

impl ItemJson {
    /// A string field other than the known ones (`None` when absent or null). Field names are
    /// case-insensitive in Salesforce: the reply spells them as the schema does, not as the query.
    fn field(&self, name: &str) -> Result<Option<&str>, SalesforceError> {
        match self
            .other
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some((_, Value::String(s))) => Ok(Some(s)),
            Some((_, Value::Null)) | None => Ok(None),
            Some(_) => Err(SalesforceError::Unparseable(format!(
                "query reply: field {} is not a string",
                excerpt(name)
            ))),
        }
    }
}

// ---- into the flow's model ---------------------------------------------------------------------

fn owned(s: Option<String>) -> String {
    s.unwrap_or_default()
}

pub fn parse_query(
    status: u16,
    body: &[u8],
    fields: &Fields<'_>,
) -> Result<QueryPage, SalesforceError> {
    let page: PageJson = super::read_reply(status, body, "query reply")?;
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
    let page: SubqueryJson = super::read_reply(status, body, "order products page")?;
    let (items, next_records_url) = items_of(page, fields)?;
    Ok(ItemsPage {
        items,
        next_records_url,
    })
}

type Items = (Vec<OrderItem>, Option<String>);

fn items_of(sub: SubqueryJson, fields: &Fields<'_>) -> Result<Items, SalesforceError> {
    let recs = sub
        .records
        .ok_or_else(|| SalesforceError::Unparseable("OrderItems has no records".into()))?;
    let mut items = Vec::with_capacity(recs.len());
    for it in recs {
        items.push(item(it, fields)?);
    }
    Ok((items, next_page(sub.done, sub.next_records_url.as_deref())?))
}

fn order(r: OrderJson, fields: &Fields<'_>) -> Result<Order, SalesforceError> {
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

fn item(it: ItemJson, fields: &Fields<'_>) -> Result<OrderItem, SalesforceError> {
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
    let original_id = it
        .original_order_item_id
        .as_deref()
        .filter(|_| fields.reductions);
    let original = match (original_id, it.original_order_item) {
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
        product_code: code,
        product_name: name,
        written_back,
        state,
        renews,
        original,
    })
}
