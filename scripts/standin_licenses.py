"""What the license stand-in holds, read the same way whichever license server the demo runs
(KEYGATE_LICENSE_SERVER: qlm, the default, or keygen): the keys issued for each order line, and
each key's line and whether it is withdrawn (QLM: revoked; Keygen: suspended)."""

import json
import os
import urllib.request


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def server():
    return os.environ.get("KEYGATE_LICENSE_SERVER", "qlm")


def issued(license_url):
    """OrderItem id -> its keys, in issue order."""
    if server() != "keygen":
        return get_json(f"{license_url}/_standin/issued")
    out = {}
    licenses = get_json(f"{license_url}/_standin/keygen_licenses")
    for key, lic in sorted(licenses.items(), key=lambda kv: kv[1]["created_seq"]):
        out.setdefault(lic["metadata"].get("salesforceOrderItemId", ""), []).append(key)
    return out


def keys(license_url):
    """Key -> {"order": its OrderItem id, "revoked": withdrawn or not}."""
    if server() != "keygen":
        return get_json(f"{license_url}/_standin/keys")
    licenses = get_json(f"{license_url}/_standin/keygen_licenses")
    return {
        key: {"order": lic["metadata"].get("salesforceOrderItemId", ""), "revoked": lic["suspended"]}
        for key, lic in licenses.items()
    }
