"""A fleet of simulated charging piles that speak only docs/protocol.md.

Outside ``app/`` on purpose: it imports nothing of the platform except
``app.protocol`` (schemas, topics), so anything it can do a vendor's real pile
can do too.
"""

from simulator.messages import MessageFactory, Uplink, command, reading
from simulator.physics import Battery
from simulator.pile import DEFAULT_CONFIG, Faults, Port, Session, SimulatedPile

__all__ = [
    "DEFAULT_CONFIG",
    "Battery",
    "Faults",
    "MessageFactory",
    "Port",
    "Session",
    "SimulatedPile",
    "Uplink",
    "command",
    "reading",
]
