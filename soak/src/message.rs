//! Outbound Messages as Salesforce sends them: one notification per order, with the Status the
//! order has when the message is sent (Activated, or Cancelled for a revoking change).

use keygate_standins::{sf_id18, ORG_ID};

/// One notification: an order and the Status the message carries.
#[derive(Debug, Clone)]
pub struct Notification {
    pub order_id: String,
    pub order_number: String,
    pub status: &'static str,
}

/// The SOAP body of a message; `serial` makes its notification ids unique across the run.
pub fn outbound_message(serial: usize, notifications: &[Notification]) -> String {
    let mut body = String::with_capacity(600 + notifications.len() * 400);
    for (i, n) in notifications.iter().enumerate() {
        let id = sf_id18(&format!("04l5Y{:06}{:04}", serial % 1_000_000, i % 10_000));
        body.push_str(&format!(
            r#"   <Notification>
    <Id>{id}</Id>
    <sObject xsi:type="sf:Order" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>{}</sf:Id>
     <sf:OrderNumber>{}</sf:OrderNumber>
     <sf:Status>{}</sf:Status>
    </sObject>
   </Notification>
"#,
            n.order_id, n.order_number, n.status
        ));
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{ORG_ID}</OrganizationId>
   <ActionId>04k5Y0000008Q1hQAE</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://mydomain.my.salesforce.com/services/Soap/c/51.0/00D5Y000001MPM7</EnterpriseUrl>
   <PartnerUrl>https://mydomain.my.salesforce.com/services/Soap/u/51.0/00D5Y000001MPM7</PartnerUrl>
{body}  </notifications>
 </soapenv:Body>
</soapenv:Envelope>
"#
    )
}
