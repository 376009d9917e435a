"""SQLAlchemy tables. Constraints carry the invariants (UNIQUE keys, CHECKs, FKs)."""

from app.models.ledger import Hold, LedgerAccount, LedgerEntry, LedgerTransaction
from app.models.org import Building, Community, PowerCompany, PropertyCompany
from app.models.people import (
    AccountBinding,
    AuditEntry,
    ChargingAccount,
    ICCard,
    RevokedToken,
    SharedToken,
    User,
)
from app.models.piles import Pile, Port
from app.models.tariffs import TariffVersion
from app.models.telemetry import (
    AlarmEvent,
    BridgeStatus,
    DownlinkCommand,
    MasterMeterReading,
    MeterReading,
    PileEvent,
    PileInbox,
    RejectedUplink,
)

__all__ = [
    "AccountBinding",
    "AlarmEvent",
    "AuditEntry",
    "BridgeStatus",
    "Building",
    "ChargingAccount",
    "Community",
    "DownlinkCommand",
    "Hold",
    "ICCard",
    "LedgerAccount",
    "LedgerEntry",
    "LedgerTransaction",
    "MasterMeterReading",
    "MeterReading",
    "Pile",
    "PileEvent",
    "PileInbox",
    "Port",
    "PowerCompany",
    "PropertyCompany",
    "RejectedUplink",
    "RevokedToken",
    "SharedToken",
    "TariffVersion",
    "User",
]
