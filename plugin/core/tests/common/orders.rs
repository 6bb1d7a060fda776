//! The orders of the lifecycle tests (a reduction, a subscription and its renewal beside the
//! demo order) and the messages that announce them, shared by every license server's tests.

use serde_json::{json, Value};

use super::world::{demo_world, order, World, ITEM, ONE};

/// The demo order of `ONE` (its one line is `ITEM`, product 001 × 3).
pub const ORDER: &str = "8015Y000001AbCdQAK";
/// A reduction order of `ORDER` and its one line, which reduces `ITEM`.
pub const REDUCTION: &str = "8015Y00000ReDuCQAV";
pub const REDUCTION_LINE: &str = "8025Y00000ReDu1QAF";
/// A subscription order (002: 365 days) and its line; a renewal order and its renewal line.
pub const SUBSCRIPTION: &str = "8015Y00000SuBsCQAV";
pub const SUBSCRIPTION_LINE: &str = "8025Y00000SuBs1QAF";
pub const RENEWAL: &str = "8015Y00000ReNeWQAV";
pub const RENEWAL_LINE: &str = "8025Y00000ReNe1QAF";

/// One notification for `order` with `status`.
pub fn message(order: &str, status: &str) -> Vec<u8> {
    String::from_utf8(ONE.to_vec())
        .unwrap()
        .replace(ORDER, order)
        .replace(
            "<sf:Status>Activated</sf:Status>",
            &format!("<sf:Status>{status}</sf:Status>"),
        )
        .into_bytes()
}

pub fn set_status(world: &mut World, order: &str, status: &str) {
    world.orders.get_mut(&order[..15]).unwrap()["Status"] = json!(status);
}

pub fn first_item<'w>(world: &'w mut World, order: &str) -> &'w mut Value {
    &mut world.orders.get_mut(&order[..15]).unwrap()["OrderItems"]["records"][0]
}

/// The demo world plus a reduction order of `ITEM` (`reduced` as Salesforce signs it, and the
/// original line's quantities after it) and the subscription with its renewal order.
pub fn lifecycle_world(reduced: f64, available: f64) -> World {
    let mut world = demo_world()
        .with_order(order(
            REDUCTION,
            "00000200",
            "Activated",
            &[(REDUCTION_LINE, "001", reduced)],
        ))
        .with_order(order(
            SUBSCRIPTION,
            "00000300",
            "Activated",
            &[(SUBSCRIPTION_LINE, "002", 1.0)],
        ))
        .with_order(order(
            RENEWAL,
            "00000301",
            "Activated",
            &[(RENEWAL_LINE, "002-RENEW", 1.0)],
        ));
    world.orders.get_mut(&REDUCTION[..15]).unwrap()["IsReductionOrder"] = json!(true);
    let line = first_item(&mut world, REDUCTION);
    line["OriginalOrderItemId"] = json!(ITEM);
    line["OriginalOrderItem"] = json!({"attributes": {"type": "OrderItem"}, "Quantity": 3.0,
                                       "AvailableQuantity": available});
    first_item(&mut world, RENEWAL)["Renews__c"] = json!(SUBSCRIPTION_LINE);
    world
}
