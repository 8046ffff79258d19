#!/usr/bin/env python3
"""Check the alerts of a storm replay: exact counts, at most one alert per incident per window
(opened + one update per window + closed), every idempotency key once.

usage: storm_check.py ALERTS.jsonl EXPECTED_DENIALS STORM_SECONDS WINDOW_SECS
"""
import collections, json, math, sys

path, expected, secs, window = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
per = collections.defaultdict(lambda: {"count": 0, "total": 0, "alerts": 0})
types = collections.Counter()
keys = collections.Counter()
for line in open(path, encoding="utf-8"):
    a = json.loads(line)
    t = a["type"]
    types[t] += 1
    keys[(a["id"], a["seq"])] += 1
    if t.startswith("incident."):
        p = per[a["id"]]
        p["count"] += a["count"]
        p["total"] = max(p["total"], a["total"])
        p["alerts"] += 1
    elif t == "suppressed":
        for h in a["incidents"]:
            p = per[h["id"]]
            p["count"] += h["count"]
            p["total"] = max(p["total"], h["total"])
counted = sum(p["count"] for p in per.values())
bad_sum = [i for i, p in per.items() if p["count"] != p["total"]]
# opened + closed + at most one update per started window
limit = 2 + math.ceil(secs / window)
over = [i for i, p in per.items() if p["alerts"] > limit]
dup = [k for k, c in keys.items() if c > 1]
print(f"alerts by type: {dict(types)}; incidents: {len(per)}; denials counted: {counted} of {expected}")
print(f"incidents whose counts do not add up to their total: {len(bad_sum)}; "
      f"incidents over {limit} alerts: {len(over)}; duplicated id:seq: {len(dup)}")
ok = counted == expected and not bad_sum and not over and not dup
print("storm check:", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
