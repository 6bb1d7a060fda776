//! Generated benchmark data: distinct orders for the Salesforce stand-in (the plugin never licenses
//! one order line twice, so every full-flow message needs orders it has not seen) and Outbound
//! Messages with 1–100 notifications, in the shape of `testdata/soap/valid/`.

use keygate_standins::sf_id18;
use serde_json::Value;
use std::path::Path;

/// Id of bench order `n` (`8015Y0000C` + 5 digits + checksum suffix): distinct from every id of
/// `testdata/salesforce/orders.json` (the family is `8015Y00000B…`).
pub fn order_id(n: usize) -> String {
    sf_id18(&format!("8015Y0000C{:05}", n % 100_000))
}

/// Id of the one order product of bench order `n`.
pub fn item_id(n: usize) -> String {
    sf_id18(&format!("8025Y0000C{:05}", n % 100_000))
}

fn notification_id(n: usize) -> String {
    sf_id18(&format!("04l5Y0000C{:05}", n % 100_000))
}

pub fn order_number(n: usize) -> String {
    format!("{:08}", 20_000 + n)
}

/// `count` orders in the stand-in's fixture shape, each Activated with one line of product `001` × 1,
/// made from family order 0 of `testdata/salesforce/orders.json` with new ids. Returns the JSON text.
pub fn orders_json(testdata_orders: &Path, count: usize) -> Result<String, String> {
    let text = std::fs::read_to_string(testdata_orders)
        .map_err(|e| format!("{}: {e}", testdata_orders.display()))?;
    let all: serde_json::Map<String, Value> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", testdata_orders.display()))?;
    let template = all
        .get(&keygate_standins::family_order_id(0))
        .cloned()
        .ok_or("orders.json has no family order 0")?;
    let mut out = serde_json::Map::new();
    for n in 0..count {
        let (oid, iid) = (order_id(n), item_id(n));
        let mut o = template.clone();
        o["Id"] = oid.clone().into();
        o["attributes"]["url"] = format!("/services/data/v60.0/sobjects/Order/{oid}").into();
        o["OrderNumber"] = order_number(n).into();
        let item = o
            .pointer_mut("/OrderItems/records/0")
            .ok_or("family order 0 has no order product")?;
        item["Id"] = iid.clone().into();
        item["attributes"]["url"] = format!("/services/data/v60.0/sobjects/OrderItem/{iid}").into();
        out.insert(oid, o);
    }
    serde_json::to_string(&Value::Object(out)).map_err(|e| e.to_string())
}

/// An Outbound Message with one notification per order `n` in `orders`, each with the given
/// Status; notification ids are `first_notification + i`.
pub fn message(orders: &[usize], status: &str, first_notification: usize) -> String {
    let mut s = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D5Y000001MPM7UAO</OrganizationId>
   <ActionId>04k5Y0000008Q1hQAE</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://mydomain.my.salesforce.com/services/Soap/c/51.0/00D5Y000001MPM7</EnterpriseUrl>
   <PartnerUrl>https://mydomain.my.salesforce.com/services/Soap/u/51.0/00D5Y000001MPM7</PartnerUrl>
"#,
    );
    for (i, &n) in orders.iter().enumerate() {
        s.push_str(&format!(
            r#"   <Notification>
    <Id>{}</Id>
    <sObject xsi:type="sf:Order" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>{}</sf:Id>
     <sf:OrderNumber>{}</sf:OrderNumber>
     <sf:Status>{status}</sf:Status>
    </sObject>
   </Notification>
"#,
            notification_id(first_notification + i),
            order_id(n),
            order_number(n),
        ));
    }
    s.push_str("  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_real_checksums_and_do_not_clash_with_the_family() {
        assert_eq!(order_id(0), "8015Y0000C00000QQA");
        assert_eq!(item_id(42), "8025Y0000C00042QQA");
        assert_ne!(order_id(0), keygate_standins::family_order_id(0));
    }

    #[test]
    fn orders_and_messages_have_the_fixture_shape() {
        let path = keygate_standins::default_orders_path();
        let json: Value = serde_json::from_str(&orders_json(&path, 3).unwrap()).unwrap();
        let o = &json[order_id(2)];
        assert_eq!(o["Id"], order_id(2));
        assert_eq!(o["Status"], "Activated");
        assert_eq!(o["OrderItems"]["records"][0]["Id"], item_id(2));
        let m = message(&[0, 1, 2], "Draft", 0);
        assert_eq!(m.matches("<Notification>").count(), 3);
        assert!(m.contains(&order_id(1)));
    }
}
