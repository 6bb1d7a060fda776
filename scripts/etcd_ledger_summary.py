#!/usr/bin/env python3
"""What the etcd ledger holds after scripts/run's sample (KEYGATE_LEDGER=etcd), for a person.

Usage: etcd_ledger_summary.py ETCD_URL PREFIX
Reads every key under PREFIX through etcd's v3 JSON gateway (keys and values base64) and prints
one line per order line and claim. Exits non-zero when no line is recorded as written back: the
sample's line must be, once it was acked.
"""
import base64
import json
import sys
import urllib.request

STATES = {"P": "pending (a license call may be running)", "I": "issued, not yet written back",
          "W": "issued and written back"}


def main() -> int:
    url, prefix = sys.argv[1], sys.argv[2]
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                       "range_end": base64.b64encode(end.encode()).decode()}).encode()
    req = urllib.request.Request(f"{url}/v3/kv/range", data=body,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        kvs = json.load(r).get("kvs", [])
    print(f"\netcd ledger at {url} ({len(kvs)} key(s) under {prefix}):")
    written = 0
    for kv in kvs:
        key = base64.b64decode(kv["key"]).decode()
        value = base64.b64decode(kv.get("value", "")).decode().split("\n")
        if key.startswith(prefix + "line/"):
            _, order, item = key.rsplit("/", 2)
            state = STATES.get(value[0], "unknown")
            keys = ", ".join(value[1:]) if value[0] != "P" else ""
            print(f"  order {order} line {item}: {state}" + (f": {keys}" if keys else ""))
            written += value[0] == "W"
        else:
            print(f"  {key} (revision {kv.get('mod_revision')}, lease {kv.get('lease', '0')})")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
