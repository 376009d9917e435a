"""The MQTT bridge: pile uplinks → services, outbox → pile downlinks.

Run one or more workers with ``flask --app wsgi bridge run --worker N``; they
share the uplink load through the shared subscription ``$share/bridge/piles/+/up/#``.
"""
