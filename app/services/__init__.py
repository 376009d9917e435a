"""The service layer: one function per thing that happens, each one transaction.

This is the only code that writes. HTTP handlers, the MQTT bridge, jobs and CLI
commands parse their input, call ONE service, and present the result.
"""
