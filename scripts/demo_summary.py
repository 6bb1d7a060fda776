#!/usr/bin/env python3
"""The end of scripts/run, for a person: what the sample message asked for and what happened to
each order line (product, key, written back or not), read from the stand-ins.

Usage: demo_summary.py MESSAGE.xml ORDERS.json LICENSE_URL SALESFORCE_URL HTTP_STATUS REPLY.xml"""

import json
import sys
import xml.etree.ElementTree as ET

import standin_licenses
from standin_licenses import get_json

SF = "urn:sobject.enterprise.soap.sforce.com"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"


def orders_in(message):
    """(order id, status) of each notification, in message order."""
    root = ET.parse(message).getroot()
    out = []
    for n in root.iter(f"{{{OUTBOUND}}}Notification"):
        obj = n.find(f"{{{OUTBOUND}}}sObject")
        if obj is None:
            continue
        oid = obj.findtext(f"{{{SF}}}Id", "")
        out.append((oid, obj.findtext(f"{{{SF}}}Status", "")))
    return out


def main():
    message, orders_file, license_url, sf_url, status, reply_file = sys.argv[1:7]
    fixture = json.load(open(orders_file))
    issued = standin_licenses.issued(license_url)
    written = get_json(f"{sf_url}/_standin/writebacks")
    with open(reply_file, encoding="utf-8", errors="replace") as f:
        reply = f.read()
    acked = status == "200" and "<Ack>true</Ack>" in reply
    if acked:
        outcome = "acked (Salesforce will not send it again)"
    else:
        fault = reply.split("<faultstring>")[-1].split("</faultstring>")[0] if "<faultstring>" in reply else "no reply"
        outcome = f"NOT acked, HTTP {status}: {fault} (Salesforce redelivers)"
    print()
    print(f"The sample Outbound Message was {outcome}.")
    for oid, state in orders_in(message):
        order = next((o for k, o in fixture.items() if k[:15] == oid[:15]), None)
        if order is None:
            print(f"  Order {oid}: not in Salesforce (deleted?), skipped")
            continue
        print(f"  Order {order.get('OrderNumber')} ({oid}), {state or order.get('Status')}, "
              f"for {order.get('Account', {}).get('Name', '?')}:")
        for item in (order.get("OrderItems") or {}).get("records", []):
            iid = item["Id"]
            product = item.get("Product2") or {}
            keys = issued.get(iid, [])
            key = ", ".join(keys) if keys else "no key"
            if iid in written:
                back = "written back to Salesforce"
            elif keys:
                back = "NOT written back"
            else:
                back = "nothing to write back"
            print(f"    line {iid}  {product.get('ProductCode', '?')} {product.get('Name', '')} "
                  f"x{item.get('Quantity', 0):g}: {key}; {back}")
    return 0 if acked else 1


if __name__ == "__main__":
    sys.exit(main())
