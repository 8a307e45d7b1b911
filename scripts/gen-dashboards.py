#!/usr/bin/env python3
"""Generates dashboards/*.json (Grafana, InfluxQL) from one description, so every dashboard uses
the same variables, datasource and annotation query. Run after editing; commit the JSON.

Queries use only InfluxQL, so they work on InfluxDB 1.8, 2.x (v1 compatibility API) and 3.x.
"""
import json
import pathlib

OUT = pathlib.Path(__file__).resolve().parent.parent / "dashboards"
DS = {"type": "influxdb", "uid": "${datasource}"}
SITE = "\"site\" =~ /^$site$/"
AREA = "\"area\" =~ /^$area$/"


def var_query(name, query, label):
    return {
        "name": name, "label": label, "type": "query", "datasource": DS, "query": query,
        "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def templating(extra=()):
    return {"list": [
        {"name": "datasource", "label": "InfluxDB", "type": "datasource", "query": "influxdb",
         "current": {}, "hide": 0},
        var_query("site", 'SHOW TAG VALUES FROM "reading" WITH KEY = "site"', "Site"),
        var_query("area", f'SHOW TAG VALUES FROM "reading" WITH KEY = "area" WHERE {SITE}', "Area"),
        *extra,
    ]}


ANNOTATIONS = {"list": [{
    "name": "Alarm events", "datasource": DS, "enable": True, "iconColor": "red",
    "query": f'SELECT "message" FROM "alarm_event" WHERE {SITE} AND {AREA} AND $timeFilter',
    "textColumn": "message", "tagsColumn": "condition,transition",
}]}


def target(q, ref="A", fmt="time_series", alias=None):
    t = {"refId": ref, "datasource": DS, "rawQuery": True, "query": q, "resultFormat": fmt}
    if alias:
        t["alias"] = alias
    return t


def panel(pid, title, kind, targets, x, y, w=12, h=8, unit=None, thresholds=None, extra=None):
    p = {"id": pid, "title": title, "type": kind, "datasource": DS, "targets": targets,
         "gridPos": {"x": x, "y": y, "w": w, "h": h},
         "fieldConfig": {"defaults": {}, "overrides": []}, "options": {}}
    if unit:
        p["fieldConfig"]["defaults"]["unit"] = unit
    if thresholds:
        p["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": thresholds}
        p["fieldConfig"]["defaults"]["custom"] = {"thresholdsStyle": {"mode": "line+area"}}
    if extra:
        p.update(extra)
    return p


def steps(*pairs):
    return [{"color": c, "value": v} for v, c in pairs]


def values(kind, unit_alias="$tag_channel"):
    return (f'SELECT mean("value") FROM "reading" WHERE "kind" = \'{kind}\' AND {SITE} AND {AREA} '
            f'AND "channel" =~ /^$channel$/ AND $timeFilter GROUP BY time($__interval), "channel" fill(none)')


def dashboard(uid, title, panels, extra_vars=()):
    return {
        "uid": uid, "title": title, "tags": ["hazgate"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "refresh": "10s", "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "templating": templating(extra_vars), "annotations": ANNOTATIONS, "panels": panels,
    }


def channel_var(kind_regex):
    return var_query(
        "channel",
        f'SHOW TAG VALUES FROM "reading" WITH KEY = "channel" WHERE "kind" =~ /{kind_regex}/ AND {SITE}',
        "Channel")


DASHBOARDS = {
    "site-overview": dashboard("hazgate-site", "hazgate: site overview", [
        panel(1, "Alarm events (range)", "stat", [target(
            f'SELECT count("seq") FROM "alarm_event" WHERE "transition" = \'raised\' AND {SITE} AND {AREA} AND $timeFilter')],
            0, 0, 6, 4, thresholds=steps((None, "green"), (1, "red"))),
        panel(2, "Fault readings (range)", "stat", [target(
            f'SELECT count("quality") FROM "reading" WHERE "quality" = \'bad\' AND {SITE} AND {AREA} AND $timeFilter')],
            6, 0, 6, 4, thresholds=steps((None, "green"), (1, "yellow"))),
        panel(3, "Channels reporting", "stat", [target(
            f'SELECT count("last") FROM (SELECT last("value") FROM "reading" WHERE {SITE} AND {AREA} AND $timeFilter GROUP BY "channel")')],
            12, 0, 6, 4),
        panel(4, "Latest values", "table", [target(
            f'SELECT last("value") AS "value", last("quality") AS "quality" FROM "reading" WHERE {SITE} AND {AREA} AND $timeFilter GROUP BY "channel", "unit"',
            fmt="table")], 0, 4, 12, 12),
        panel(5, "Alarm log", "table", [target(
            f'SELECT "channel", "condition", "transition", "priority", "value", "message" FROM "alarm_event" WHERE {SITE} AND {AREA} AND $timeFilter ORDER BY time DESC LIMIT 200',
            fmt="table")], 12, 4, 12, 12),
    ], ),
    "gas": dashboard("hazgate-gas", "hazgate: gas detection", [
        panel(1, "Combustible gas (%LEL)", "timeseries", [target(values("combustible_gas"), alias="$tag_channel")],
              0, 0, 24, 10, unit="percent",
              thresholds=steps((None, "green"), (25, "orange"), (50, "red"))),
        panel(3, "Toxic gas (ppm)", "timeseries", [target(values("toxic_gas"), alias="$tag_channel")],
              0, 10, 12, 10, unit="ppm",
              thresholds=steps((None, "green"), (10, "orange"), (20, "red"))),
        panel(4, "Oxygen (%VOL)", "timeseries", [target(values("oxygen"), alias="$tag_channel")],
              12, 10, 12, 10, unit="percent",
              thresholds=steps((None, "red"), (19.5, "green"), (23.5, "red"))),
        panel(2, "Gas detector faults", "timeseries", [target(
            f'SELECT count("quality") FROM "reading" WHERE "kind" =~ /gas|oxygen/ AND "quality" = \'bad\' AND {SITE} AND {AREA} AND $timeFilter GROUP BY time($__interval), "channel" fill(none)',
            alias="$tag_channel")], 0, 20, 24, 6),
    ], [channel_var("gas|oxygen")]),
    "tanks": dashboard("hazgate-tanks", "hazgate: tanks", [
        panel(1, "Tank level (m)", "timeseries", [target(values("tank_level"), alias="$tag_channel")],
              0, 0, 24, 10, unit="lengthm",
              thresholds=steps((None, "red"), (1.0, "orange"), (1.5, "green"), (10.0, "orange"), (11.0, "red"))),
        panel(2, "Temperature (°C)", "timeseries", [target(values("temperature"), alias="$tag_channel")], 0, 10, 12, 8, unit="celsius"),
        panel(3, "Pressure (kPa)", "timeseries", [target(values("pressure"), alias="$tag_channel")], 12, 10, 12, 8, unit="kpa"),
    ], [channel_var("tank_level|temperature|pressure")]),
    "dust": dashboard("hazgate-dust", "hazgate: dust collectors", [
        panel(1, "Differential pressure (Pa)", "timeseries", [target(values("differential_pressure"), alias="$tag_channel")],
              0, 0, 12, 8, unit="pressurepa",
              thresholds=steps((None, "red"), (300, "green"), (1800, "red"))),
        panel(2, "Hopper temperature (°C)", "timeseries", [target(values("temperature"), alias="$tag_channel")], 12, 0, 12, 8, unit="celsius"),
        panel(3, "Collector running", "state-timeline", [target(values("running"), alias="$tag_channel")], 0, 8, 12, 6),
        panel(4, "Spark / rotary valve fault", "state-timeline", [target(
            f'SELECT max("value") FROM "reading" WHERE "kind" =~ /spark|valve_fault/ AND {SITE} AND {AREA} AND $timeFilter GROUP BY time($__interval), "channel" fill(none)',
            alias="$tag_channel")], 12, 8, 12, 6),
    ], [channel_var("differential_pressure|temperature|running")]),
    "power": dashboard("hazgate-power", "hazgate: power load", [
        panel(1, "Active power (kW)", "timeseries", [target(values("power"), alias="$tag_channel")], 0, 0, 24, 10, unit="kwatt"),
        panel(2, "Energy per interval (kWh)", "timeseries", [target(
            f'SELECT difference(last("value")) FROM "reading" WHERE "kind" = \'energy\' AND {SITE} AND {AREA} AND $timeFilter GROUP BY time($__interval), "channel" fill(none)',
            alias="$tag_channel")], 0, 10, 24, 8, unit="kwatth"),
    ], [channel_var("power|energy")]),
    "gateway-health": dashboard("hazgate-health", "hazgate: data health", [
        panel(1, "Readings per interval, by device", "timeseries", [target(
            f'SELECT count("quality") FROM "reading" WHERE {SITE} AND {AREA} AND $timeFilter GROUP BY time($__interval), "device" fill(0)',
            alias="$tag_device")], 0, 0, 24, 8),
        panel(2, "Fault readings by channel", "timeseries", [target(
            f'SELECT count("quality") FROM "reading" WHERE "quality" = \'bad\' AND {SITE} AND {AREA} AND $timeFilter GROUP BY time($__interval), "channel" fill(none)',
            alias="$tag_channel")], 0, 8, 24, 8),
    ]),
}

for name, d in DASHBOARDS.items():
    (OUT / f"{name}.json").write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n")
print(f"wrote {len(DASHBOARDS)} dashboards to {OUT}")
