//! The book of orders a soak runs on: generated from the seed, written as the Salesforce
//! stand-in's orders file, with each order's life (activated; some later cancelled, some of those
//! reactivated; reduced by a reduction order; renewed by a renewal order) and what its keys must
//! look like at the end.

use std::path::Path;

use keygate_standins::sf_id18;
use serde_json::{json, Value};

/// Products the soak's plugin configuration maps (`soak_patch`), and one it does not.
pub const PERPETUAL: &str = "001";
pub const SUBSCRIPTION: &str = "002";
pub const RENEWAL: &str = "002-RENEW";
pub const UNMAPPED: &str = "999";
/// Days of validity of a subscription key, and of each renewal (`is_expduration`).
pub const SUBSCRIPTION_DAYS: u32 = 365;

#[derive(Debug, Clone)]
pub struct Line {
    pub id: String,
    pub code: &'static str,
    pub quantity: u32,
}

/// One base order and its life.
#[derive(Debug, Clone)]
pub struct Order {
    pub id: String,
    pub number: String,
    pub lines: Vec<Line>,
    pub cancelled: bool,
    pub reactivated: bool,
    /// A reduction order: (its id, its line's id, the base line it reduces by 1).
    pub reduction: Option<(String, String, String)>,
    /// A renewal order: (its id, its line's id, the subscription line it renews).
    pub renewal: Option<(String, String, String)>,
}

impl Order {
    /// Revoked at the end: cancelled and never reactivated.
    pub fn revoked_at_end(&self) -> bool {
        self.cancelled && !self.reactivated
    }

    /// Lines that get a key of their own.
    pub fn licensed_lines(&self) -> impl Iterator<Item = &Line> {
        self.lines
            .iter()
            .filter(|l| l.code == PERPETUAL || l.code == SUBSCRIPTION)
    }
}

pub struct Book {
    pub orders: Vec<Order>,
}

fn id(prefix: &str, n: usize, suffix: &str) -> String {
    sf_id18(&format!("{prefix}{n:04}{suffix}"))
}

impl Book {
    /// `count` orders of 1–5 lines; about 15 % cancelled (half of them reactivated), 10 % with a
    /// reduction order (a perpetual line of 2 or more seats, order not cancelled), 10 % renewed
    /// (a subscription line, order not cancelled).
    pub fn generate(rng: &mut fastrand::Rng, count: usize) -> Book {
        let orders = (0..count)
            .map(|n| {
                let lines: Vec<Line> = (0..rng.usize(1..=5))
                    .map(|j| {
                        let code = match rng.u32(0..100) {
                            0..=64 => PERPETUAL,
                            65..=94 => SUBSCRIPTION,
                            _ => UNMAPPED,
                        };
                        Line {
                            id: id("8025Y000SK", n, &j.to_string()),
                            code,
                            quantity: if code == PERPETUAL { rng.u32(1..=5) } else { 1 },
                        }
                    })
                    .collect();
                let cancelled = rng.u32(0..100) < 15;
                let reactivated = cancelled && rng.bool();
                let alive = !cancelled || reactivated;
                let reducible = lines
                    .iter()
                    .find(|l| l.code == PERPETUAL && l.quantity >= 2);
                let reduction = reducible
                    .filter(|_| alive && rng.u32(0..100) < 10)
                    .map(|l| {
                        (
                            id("8015Y0000RD", n, ""),
                            id("8025Y000RD", n, "0"),
                            l.id.clone(),
                        )
                    });
                let renewable = lines.iter().find(|l| l.code == SUBSCRIPTION);
                let renewal = renewable
                    .filter(|_| alive && rng.u32(0..100) < 10)
                    .map(|l| {
                        (
                            id("8015Y0000RN", n, ""),
                            id("8025Y000RN", n, "0"),
                            l.id.clone(),
                        )
                    });
                Order {
                    id: id("8015Y0000SK", n, ""),
                    number: format!("{:08}", 50_000_000 + n),
                    lines,
                    cancelled,
                    reactivated,
                    reduction,
                    renewal,
                }
            })
            .collect();
        Book { orders }
    }

    /// The most keys the etcd ledger may hold at the end: one per line keygate licensed, and one
    /// per reduction or renewal line (each records the key it changed). No claim.
    pub fn etcd_line_bound(&self) -> usize {
        self.orders
            .iter()
            .map(|o| {
                o.licensed_lines().count()
                    + usize::from(o.reduction.is_some())
                    + usize::from(o.renewal.is_some())
            })
            .sum()
    }

    pub fn line_count(&self) -> usize {
        self.orders.iter().map(|o| o.lines.len()).sum()
    }

    /// The Salesforce stand-in's orders file: every base order, reduction order and renewal
    /// order, in the REST query shape of `testdata/salesforce/orders.json`.
    pub fn write_orders_file(&self, path: &Path) -> std::io::Result<()> {
        let mut all = serde_json::Map::new();
        for o in &self.orders {
            let items: Vec<Value> = o
                .lines
                .iter()
                .map(|l| item(&l.id, l.code, l.quantity as f64))
                .collect();
            all.insert(o.id.clone(), order(&o.id, &o.number, items, json!({})));
            if let Some((rid, rline, reduced)) = &o.reduction {
                let had = o
                    .lines
                    .iter()
                    .find(|l| &l.id == reduced)
                    .map_or(0, |l| l.quantity);
                let mut line = item(rline, PERPETUAL, -1.0);
                line["OriginalOrderItemId"] = json!(reduced);
                line["OriginalOrderItem"] = json!({
                    "attributes": {"type": "OrderItem"},
                    "Quantity": had as f64, "AvailableQuantity": (had - 1) as f64});
                all.insert(
                    rid.clone(),
                    order(
                        rid,
                        &format!("R{}", o.number),
                        vec![line],
                        json!({"IsReductionOrder": true, "OriginalOrderId": o.id}),
                    ),
                );
            }
            if let Some((nid, nline, renewed)) = &o.renewal {
                let mut line = item(nline, RENEWAL, 1.0);
                line["Renews__c"] = json!(renewed);
                all.insert(
                    nid.clone(),
                    order(nid, &format!("N{}", o.number), vec![line], json!({})),
                );
            }
        }
        std::fs::write(path, serde_json::to_vec_pretty(&Value::Object(all))?)
    }
}

fn item(id: &str, code: &str, quantity: f64) -> Value {
    json!({"attributes": {"type": "OrderItem"}, "Id": id, "Quantity": quantity,
           "Product2": {"attributes": {"type": "Product2"}, "ProductCode": code, "Name": format!("Product {code}")},
           "License_Keys__c": null})
}

fn order(id: &str, number: &str, items: Vec<Value>, extra: Value) -> Value {
    let mut o = json!({
        "attributes": {"type": "Order"}, "Id": id, "OrderNumber": number, "Status": "Activated",
        "Account": {"attributes": {"type": "Account"}, "Name": "Soak Inc"},
        "BillToContact": {"attributes": {"type": "Contact"}, "FirstName": "Sam", "LastName": "Soak",
                          "Email": "sam@soak.example", "Phone": "555"},
        "CustomerAuthorizedBy": null,
        "OrderItems": {"totalSize": items.len(), "done": true, "records": items},
    });
    if let (Some(o), Some(extra)) = (o.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            o.insert(k.clone(), v.clone());
        }
    }
    o
}

/// The plugin configuration the soak runs (a merge patch over envoy.local.yaml's): the order
/// lifecycle on, a state field, the renewal product.
pub fn soak_patch() -> Value {
    json!({
        "lifecycle": {"revoke_statuses": ["Cancelled"], "reductions": true, "renewal_field": "Renews__c"},
        "salesforce": {"state_field": "License_State__c"},
        "products": {
            RENEWAL: {"renewal": true, "productid": 2, "majorversion": 3, "minorversion": 0,
                      "args": {"is_expduration": SUBSCRIPTION_DAYS.to_string()}}
        }
    })
}
