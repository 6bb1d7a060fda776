#!/usr/bin/env python3
"""Regenerates orders.json (the Salesforce stand-in's data). Run from anywhere:
    python3 testdata/salesforce/gen_orders.py
Every id gets its real 18-character suffix (derived from the case of the first 15 characters),
because the plugin normalises ids with that checksum."""
import json
import os

API = "v60.0"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def id18(base15):
    assert len(base15) == 15 and base15.isalnum(), base15
    suffix = ""
    for i in range(0, 15, 5):
        bits = sum(1 << j for j, c in enumerate(base15[i:i + 5]) if c.isupper())
        suffix += ALPHABET[bits]
    return base15 + suffix


def attrs(kind, rid):
    return {"type": kind, "url": f"/services/data/{API}/sobjects/{kind}/{rid}"}


def contact(base15, first, last, email, phone):
    cid = id18(base15)
    return cid, {"attributes": attrs("Contact", cid), "FirstName": first, "LastName": last,
                 "Email": email, "Phone": phone}


PRODUCTS = {
    "001": (id18("01t5Y000001XyZa"), "MyProduct"),
    "002": (id18("01t5Y000001XyZb"), "Other"),
    "999": (id18("01t5Y000001XyZc"), "Unmapped Widget"),
    "002-RENEW": (id18("01t5Y000001XyZd"), "Other, renewal"),
}


def item(base15, code, qty):
    iid = id18(base15)
    pid, pname = PRODUCTS[code]
    return {"attributes": attrs("OrderItem", iid), "Id": iid, "Quantity": float(qty),
            "Product2Id": pid,
            "Product2": {"attributes": attrs("Product2", pid), "ProductCode": code, "Name": pname},
            "License_Keys__c": None}


def order(base15, number, status, account, bill_to, authorized_by, items):
    oid = id18(base15)
    acc_id, acc_name = account
    rec = {"attributes": attrs("Order", oid), "Id": oid, "OrderNumber": number, "Status": status,
           "AccountId": acc_id,
           "Account": {"attributes": attrs("Account", acc_id), "Name": acc_name}}
    for rel, c in (("BillToContact", bill_to), ("CustomerAuthorizedBy", authorized_by)):
        rec[rel + "Id"] = c[0] if c else None
        rec[rel] = c[1] if c else None
    rec["OrderItems"] = None if items is None else {
        "totalSize": len(items), "done": True, "records": items}
    return oid, rec


ACME = (id18("0015Y00002BFDeL"), "Acme")
GLOBEX = (id18("0015Y00002GLoBx"), "Globex & Søn")
INITECH = (id18("0015Y00002INiTc"), "Initech")
JANE = contact("0035Y000035gg9G", "Jane", "Doe", "jane@acme.com", "+1 415 555 0100")
SEAN = contact("0035Y000035hh1K", "Seán", "O'Brien", "sean.obrien@globex.example", None)
PAT = contact("0035Y000035ii2M", "Pat", "Family", "pat@initech.example", "+1 212 555 0199")

orders = {}


def add(*args):
    oid, rec = order(*args)
    orders[oid] = rec


# The demo order (wire-formats.md §1.4/§3.1): one line, product 001, quantity 3.
add("8015Y000001AbCd", "00000114", "Activated", ACME, JANE, None,
    [item("8025Y00000AbCdE", "001", 3)])
# Several lines, one of them unmapped; only CustomerAuthorizedBy is set.
add("8015Y000001MuLt", "00000115", "Activated", GLOBEX, None, SEAN,
    [item("8025Y000001MuL1", "001", 1), item("8025Y000001MuL2", "002", 2),
     item("8025Y000001MuL3", "999", 5)])
# Not activated.
add("8015Y000001DrAf", "00000116", "Draft", ACME, JANE, None,
    [item("8025Y000001DrA1", "001", 1)])
# Activated but without order products: Salesforce returns null for an empty child subquery.
add("8015Y000001NoIt", "00000117", "Activated", ACME, JANE, JANE, None)
# Generated family: order n (0..99) is 8015Y00000B + 4-digit n, its one line 8025Y00000B + 4-digit n.
for n in range(100):
    add(f"8015Y00000B{n:04d}", f"{1000 + n:08d}", "Activated", INITECH, PAT, None,
        [item(f"8025Y00000B{n:04d}", "001", 1)])

# The order lifecycle (README.md, "Order lifecycle"):
# a reduction order of the demo order: one line reducing its line by 1 (3 → 2);
red_item = item("8025Y00000ReDu1", "001", -1)
red_item["OriginalOrderItemId"] = id18("8025Y00000AbCdE")
red_item["OriginalOrderItem"] = {"attributes": attrs("OrderItem", id18("8025Y00000AbCdE")),
                                 "Quantity": 3.0, "AvailableQuantity": 2.0}
add("8015Y00000ReDuC", "00000118", "Activated", ACME, JANE, None, [red_item])
orders[id18("8015Y00000ReDuC")].update(
    {"IsReductionOrder": True, "OriginalOrderId": id18("8015Y000001AbCd")})
# a subscription (product 002, 365 days) and the order that renews it (Renews__c names its line).
add("8015Y00000SuBsC", "00000119", "Activated", ACME, JANE, None,
    [item("8025Y00000SuBs1", "002", 1)])
renewal = item("8025Y00000ReNe1", "002-RENEW", 1)
renewal["Renews__c"] = id18("8025Y00000SuBs1")
add("8015Y00000ReNeW", "00000120", "Activated", ACME, JANE, None, [renewal])

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "orders.json")
with open(out, "w", encoding="utf-8") as f:
    json.dump(orders, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(f"wrote {len(orders)} orders to {out}")
