#!/usr/bin/python3
"""A reply agent for postern's "reply command": the message comes as JSON
on stdin (docs/actions.md lists its fields), the reply goes to stdout.

This one answers with the forecast for New York City from a JSON file
(argv[1]) that a cron job would refresh from the National Weather Service
(https://api.weather.gov); reading the file keeps the agent fast and off
the network.  Plain text out; it could print a whole MIME message instead
(with a Content-Type: header first) for HTML or attachments.
"""
import json
import sys


def main():
    msg = json.load(sys.stdin)
    try:
        with open(sys.argv[1]) as f:
            fc = json.load(f)
    except (IndexError, OSError, ValueError) as e:
        print("no forecast to give: %s" % e, file=sys.stderr)
        return 75			# EX_TEMPFAIL: postern tries again later
    name = msg["addresses"]["from"][0]["name"] if msg["addresses"]["from"] \
        else ""
    lines = ["Hello %s," % name if name else "Hello,", "",
             "The forecast for %s (issued %s):" % (fc["place"], fc["issued"]),
             ""]
    for p in fc["periods"]:
        lines.append("%s: %s" % (p["name"], p["text"]))
    lines += ["", "-- ", "nyc-weather, an automatic answer to: %s"
              % (msg["subject"] or "(no subject)")]
    print("\n".join(lines))
    return 0


sys.exit(main())
