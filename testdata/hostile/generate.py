#!/usr/bin/env python3
"""Writes the hostile-input corpus: one NAME.xml per attack and NAME.expect with the answer it must get.

NAME.expect holds `key: value` lines:
  status: HTTP status the gateway must answer
  fault:  a substring the SOAP faultstring must contain
  method, content-type: request overrides (default POST, text/xml; charset=utf-8)
  auth:   good (default) | none | wrong | wrong-user
  pad-to-bytes: N  -- the test pads the body's OrderNumber text to N bytes (too big to commit)
Run: python3 testdata/hostile/generate.py  (rewrites every file; commit the result)
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUT_NS = "http://soap.sforce.com/2005/09/outbound"
SOB_NS = "urn:sobject.enterprise.soap.sforce.com"


def notif(nid="04l5Y00002lRDRNQA4", oid="8015Y000001AbCdQAK", status="Draft", typ="sf:Order",
          sob_ns=SOB_NS, extra=""):
    return (f'   <Notification>\n    <Id>{nid}</Id>\n'
            f'    <sObject xsi:type="{typ}" xmlns:sf="{sob_ns}">\n'
            f'     <sf:Id>{oid}</sf:Id>\n     <sf:OrderNumber>00000114</sf:OrderNumber>\n'
            f'     <sf:Status>{status}</sf:Status>{extra}\n    </sObject>\n   </Notification>\n')


def msg(notifications=None, org="00D5Y000001MPM7UAO", env_ns=ENV_NS, out_ns=OUT_NS, prolog="",
        header="", before_body="", after=""):
    if notifications is None:
        notifications = notif()
    xmlns = f' xmlns="{out_ns}"' if out_ns is not None else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n{prolog}'
            f'<soapenv:Envelope xmlns:soapenv="{env_ns}" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n{header}{before_body}'
            f' <soapenv:Body>\n  <notifications{xmlns}>\n'
            f'   <OrganizationId>{org}</OrganizationId>\n   <ActionId>04k5Y0000008Q1hQAE</ActionId>\n'
            f'   <SessionId xsi:nil="true"/>\n'
            f'   <EnterpriseUrl>https://mydomain.my.salesforce.com/services/Soap/c/51.0/00D5Y000001MPM7</EnterpriseUrl>\n'
            f'   <PartnerUrl>https://mydomain.my.salesforce.com/services/Soap/u/51.0/00D5Y000001MPM7</PartnerUrl>\n'
            f'{notifications}  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n{after}')


VALID = msg()
CASES = {}


def case(name, body, status, fault, **opts):
    CASES[name] = (body, status, fault, opts)


# XML-level attacks: entities and DTDs are refused before anything is expanded.
case("xxe_external_entity", msg(prolog='<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n').replace("00000114", "&xxe;"), 400, "DOCTYPE declarations are not allowed")
case("xxe_parameter_entity", msg(prolog='<!DOCTYPE foo [<!ENTITY % dtd SYSTEM "http://127.0.0.1:9/evil.dtd"> %dtd;]>\n'), 400, "DOCTYPE declarations are not allowed")
case("xxe_external_dtd", msg(prolog='<!DOCTYPE soapenv:Envelope SYSTEM "http://127.0.0.1:9/x.dtd">\n'), 400, "DOCTYPE declarations are not allowed")
lol = '<!DOCTYPE lolz [<!ENTITY lol "lol">' + "".join(
    f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)) + "]>\n"
case("billion_laughs", msg(prolog=lol).replace("00000114", "&lol9;"), 400, "DOCTYPE declarations are not allowed")
case("doctype_plain", msg(prolog="<!DOCTYPE Envelope>\n"), 400, "DOCTYPE declarations are not allowed")
case("undefined_entity_reference", VALID.replace("00000114", "&boom;"), 400, "undefined entity reference")
case("char_ref_quote_in_id", VALID.replace("8015Y000001AbCdQAK", "8015Y000001AbCd&#39;AK"), 400, "is not a Salesforce id")
case("processing_instruction", VALID.replace("<soapenv:Body>", "<?evil run?><soapenv:Body>"), 400, "processing instructions are not allowed")
case("deep_nesting_header", msg(header=" <soapenv:Header>" + "<a>" * 1000 + "</a>" * 1000 + "</soapenv:Header>\n"), 400, "nested deeper than 16 levels")
case("deep_nesting_in_field", VALID.replace("<sf:OrderNumber>00000114</sf:OrderNumber>", "<sf:OrderNumber>" + "<sf:x>" * 50 + "</sf:x>" * 50 + "</sf:OrderNumber>"), 400, "unexpected element")
case("big_text_node", VALID, 413, "request body larger than", **{"pad-to-bytes": "10485760"})
case("over_limit_body", VALID, 413, "request body larger than", **{"pad-to-bytes": "2097152"})
case("truncated_xml", VALID[: len(VALID) // 2], 400, "malformed XML")
case("truncated_in_tag", VALID[: VALID.index("<sf:Status>") + 5], 400, "malformed XML")
case("mismatched_end_tag", VALID.replace("</sf:Status>", "</sf:Statu>"), 400, "malformed XML")
case("trailing_second_envelope", VALID + f'<soapenv:Envelope xmlns:soapenv="{ENV_NS}"/>', 400, "content after the end of the Envelope")
case("namespace_binding_flood", VALID.replace("<sf:Status>", "<sf:Status " + " ".join(f'xmlns:p{i}="urn:p{i}"' for i in range(200)) + ">"), 400, "malformed XML")
case("empty_body", "", 400, "empty request body")
case("whitespace_body", "   \n\t  ", 400, "empty request body")
case("not_xml_json", '{"notifications": []}', 400, "malformed XML")
case("utf16_declared", VALID.replace('encoding="UTF-8"', 'encoding="UTF-16"'), 400, "only UTF-8 is accepted")

# Namespaces: matched by URI, never by prefix.
case("soap12_envelope", msg(env_ns="http://www.w3.org/2003/05/soap-envelope"), 400, "expected SOAP 1.1")
case("envelope_without_namespace", VALID.replace(f'xmlns:soapenv="{ENV_NS}" ', '').replace("soapenv:", ""), 400, "Envelope is in namespace")
# XML Namespaces 1.0 has no way to undeclare a prefix: `xmlns:p=""` is not well-formed.
case("empty_prefix_binding", VALID.replace(f'xmlns:soapenv="{ENV_NS}"', 'xmlns:soapenv=""'), 400, "prefix bound to the empty namespace")
case("wrong_notifications_namespace", msg(out_ns="http://soap.sforce.com/2005/09/outbound/evil"), 400, "notifications is in namespace")
case("missing_notifications_namespace", msg(out_ns=None), 400, "notifications is in namespace '(no namespace)'")
case("prefix_rebound_for_type", VALID.replace(f'xsi:type="sf:Order" xmlns:sf="{SOB_NS}"', 'xsi:type="sf:Order" xmlns:sf="urn:partner.soap.sforce.com"'), 400, "this endpoint accepts only Order")
case("prefix_rebound_for_fields", VALID.replace("<sf:Id>8015Y000001AbCdQAK</sf:Id>", '<sf:Id xmlns:sf="urn:evil">8015Y000001AbCdQAK</sf:Id>'), 400, "unexpected element")
case("xsi_prefix_rebound", VALID.replace('<sObject xsi:type="sf:Order"', '<sObject xmlns:xsi="urn:not-xsi" xsi:type="sf:Order"'), 400, "sObject has no xsi:type")
case("xsi_type_opportunity", VALID.replace("sf:Order", "sf:Opportunity").replace("8015Y000001AbCdQAK", "0065Y000001AbCdQAK"), 400, "'Opportunity', this endpoint accepts only Order")
case("xsi_type_account", VALID.replace("sf:Order", "sf:Account").replace("8015Y000001AbCdQAK", "0015Y000001AbCdQAK"), 400, "this endpoint accepts only Order")
case("xsi_type_missing", VALID.replace(' xsi:type="sf:Order"', ""), 400, "sObject has no xsi:type")
case("order_id_of_another_object", VALID.replace("8015Y000001AbCdQAK", "0015Y000001AbCdQAK"), 400, "is not an Order id")

# Structure and counts.
case("notifications_101", msg(notifications="".join(notif(nid=f"04l5Y00000N{i:04d}QAB", oid=f"8015Y00000B{i:04d}QAB") for i in range(101))), 400, "more than 100 Notification elements")
case("duplicate_notification_ids", msg(notifications=notif() + notif(oid="8015Y000001MuLtQAK")), 400, "appears more than once")
case("duplicate_organization_id", VALID.replace("   <ActionId>", "   <OrganizationId>00D000000000001AAA</OrganizationId>\n   <ActionId>"), 400, "OrganizationId appears more than once")
case("duplicate_body", VALID.replace(" <soapenv:Body>", f" <soapenv:Body/>\n <soapenv:Body>", 1), 400, "missing required element notifications")
case("text_inside_notifications", VALID.replace("   <ActionId>", "   hello\n   <ActionId>"), 400, "unexpected text inside notifications")
case("cdata_in_structure", VALID.replace("   <ActionId>", "   <![CDATA[x]]>\n   <ActionId>"), 400, "unexpected text inside notifications")
case("unknown_element_in_notifications", VALID.replace("   <ActionId>", "   <Evil>1</Evil>\n   <ActionId>"), 400, "unexpected element Evil")
case("missing_organization_id", VALID.replace("   <OrganizationId>00D5Y000001MPM7UAO</OrganizationId>\n", ""), 400, "missing required element OrganizationId")
case("no_notification", msg(notifications=""), 400, "notifications contains no Notification")
case("empty_local_name", VALID.replace("<sf:Status>Draft</sf:Status>", "<sf:Status>Draft</sf:Status><sf:/>"), 400, "has no local name")

# Ids that try to become SOQL, headers or keys.
case("id_with_quote", VALID.replace("8015Y000001AbCdQAK", "8015Y000001AbC'QAK"), 400, "is not a Salesforce id")
case("id_soql_injection", VALID.replace("8015Y000001AbCdQAK", "801' OR Name LIKE '%"), 400, "is not a Salesforce id")
case("id_crlf", VALID.replace("8015Y000001AbCdQAK", "8015Y000001AbCd&#13;&#10;X-Evil: 1"), 400, "is not a Salesforce id")
case("id_too_long", VALID.replace("8015Y000001AbCdQAK", "8015Y000001AbCdQAKXX"), 400, "is not a Salesforce id")
case("notification_id_injection", VALID.replace("04l5Y00002lRDRNQA4", "04l5Y00002lRDRN');--"), 400, "is not a Salesforce id")
case("org_id_injection", VALID.replace("00D5Y000001MPM7UAO", "00D5Y000001MPM7' OR '1"), 400, "is not a Salesforce id")

# The sender.
case("foreign_org_id", msg(org="00D000000000001AAA"), 403, "organization 00D000000000001AAA is not allowed")
case("missing_secret", VALID, 401, "credentials missing", auth="none")
case("wrong_secret", VALID, 401, "credentials not accepted", auth="wrong")
case("wrong_user", VALID, 401, "credentials not accepted", auth="wrong-user")
case("wrong_method_get", VALID, 405, "method GET not allowed", method="GET")
case("wrong_method_put", VALID, 405, "method PUT not allowed", method="PUT")
case("wrong_content_type_json", VALID, 415, "content type application/json not supported", **{"content-type": "application/json"})
case("wrong_charset", VALID, 415, "charset ISO-8859-1 not supported", **{"content-type": "text/xml; charset=ISO-8859-1"})

if __name__ == "__main__":
    for f in os.listdir(HERE):
        if f.endswith((".xml", ".expect")):
            os.remove(os.path.join(HERE, f))
    for name, (body, status, fault, opts) in sorted(CASES.items()):
        with open(os.path.join(HERE, name + ".xml"), "w", encoding="utf-8", newline="") as fh:
            fh.write(body)
        lines = [f"status: {status}", f"fault: {fault}"] + [f"{k}: {v}" for k, v in sorted(opts.items())]
        with open(os.path.join(HERE, name + ".expect"), "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
    # Invalid UTF-8 cannot be written as text.
    with open(os.path.join(HERE, "invalid_utf8.xml"), "wb") as fh:
        fh.write(VALID.replace("00000114", "0000\udcff14").encode("utf-8", "surrogateescape"))
    with open(os.path.join(HERE, "invalid_utf8.expect"), "w", encoding="utf-8") as fh:
        fh.write("status: 400\nfault: request body is not valid UTF-8\n")
    print(f"{len(CASES) + 1} hostile cases written")
