#!/usr/bin/env python3
"""Check the alerts of a storm replay: exact counts, at most one alert per incident per window
(opened + one update per window + closed; an update at least a window of log time after the
incident's previous alert), every idempotency key once. Under the flood cap most incident
alerts are held in `suppressed` entries, which hides an incident alerting too often: check that
on a replay with `max_alerts_per_minute = 0`.

usage: storm_check.py ALERTS.jsonl EXPECTED_DENIALS STORM_SECONDS WINDOW_SECS
"""
import collections, datetime, json, math, sys

path, expected, secs, window = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])


def ms(stamp):
    t = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    return round(t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)


per = collections.defaultdict(lambda: {"count": 0, "total": 0, "alerts": 0, "seen": []})
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
        p["seen"].append((a["seq"], t, ms(a["last_seen"])))
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
# an update comes a window (log time: the replay's clock) or more after the alert before it
early = []
for i, p in per.items():
    seen = sorted(p["seen"])
    for (_, _, before), (_, t, at) in zip(seen, seen[1:]):
        if t == "incident.update" and at - before < window * 1000:
            early.append(i)
            break
dup = [k for k, c in keys.items() if c > 1]
print(f"alerts by type: {dict(types)}; incidents: {len(per)}; denials counted: {counted} of {expected}")
print(f"incidents whose counts do not add up to their total: {len(bad_sum)}; "
      f"incidents over {limit} alerts: {len(over)}; with an update less than a window after "
      f"their previous alert: {len(early)}; duplicated id:seq: {len(dup)}")
ok = counted == expected and not bad_sum and not over and not early and not dup
print("storm check:", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
