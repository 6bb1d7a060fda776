#!/usr/bin/env python3
"""The order lifecycle part of scripts/run, for a person: once the sample order is licensed, an
admin cancels it (its keys are revoked at the license server), then activates it again (the same
keys come back, no new one). Each step changes the order's Status in the Salesforce stand-in,
sends the Outbound Message Salesforce would send, and prints what the license server and
Salesforce hold afterwards. Exits 1 unless every step was acked and did what it should.

Usage: demo_lifecycle.py MESSAGE.xml ORDERS.json WEBHOOK_URL LICENSE_URL SALESFORCE_URL STATE_FIELD"""

import json
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import standin_licenses
from standin_licenses import get_json

SF = "urn:sobject.enterprise.soap.sforce.com"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
ACTIVATED = "<sf:Status>Activated</sf:Status>"


def post(url, body, content_type):
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": content_type, "SOAPAction": '""'})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def order_of(message):
    root = ET.fromstring(message)
    obj = next(root.iter(f"{{{OUTBOUND}}}sObject"))
    return obj.findtext(f"{{{SF}}}Id", "")


def main():
    message_file, orders_file, webhook, license_url, sf_url, state_field = sys.argv[1:7]
    message = open(message_file, encoding="utf-8").read()
    if ACTIVATED not in message:
        print(f"{message_file} has no {ACTIVATED}", file=sys.stderr)
        return 1
    order = order_of(message)
    fixture = json.load(open(orders_file, encoding="utf-8"))
    record = next((o for k, o in fixture.items() if k[:15] == order[:15]), {})
    items = {i["Id"] for i in (record.get("OrderItems") or {}).get("records", [])}
    keys_before = standin_licenses.keys(license_url)
    ours = {k: v for k, v in keys_before.items() if v["order"] in items}
    ok = True
    print()
    print(f"The order lifecycle of order {order}:")
    for status, revoked, label in (("Cancelled", True, "Revoked"), ("Activated", False, "Restored")):
        change = json.dumps({"order_status": {order: status}}).encode()
        post(f"{sf_url}/_standin/config", change, "application/json")
        body = message.replace(ACTIVATED, f"<sf:Status>{status}</sf:Status>").encode()
        code, reply = post(webhook, body, "text/xml; charset=utf-8")
        acked = code == 200 and "<Ack>true</Ack>" in reply
        keys = standin_licenses.keys(license_url)
        fields = get_json(f"{sf_url}/_standin/writeback_fields")
        verb = "cancels" if status == "Cancelled" else "activates it again"
        print(f"  an admin {verb} (Status {status}): "
              f"{'acked' if acked else f'NOT acked, HTTP {code}'}")
        ok &= acked
        for key, before in sorted(ours.items()):
            now = keys.get(key, {})
            item = before["order"]
            shown = (fields.get(item) or {}).get(state_field, "(none)")
            withdrawn = "suspended" if standin_licenses.server() == "keygen" else "revoked"
            state = withdrawn if now.get("revoked") else "active"
            print(f"    line {item}: key {key} {state} at the license server; "
                  f"{state_field} = {shown}")
            ok &= now.get("revoked") == revoked and shown == label
    new_keys = set(standin_licenses.keys(license_url)) - set(keys_before)
    print(f"  keys issued by these steps: {len(new_keys)} (the same keys throughout)")
    ok &= not new_keys and bool(ours)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
