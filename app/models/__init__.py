"""SQLAlchemy tables. Constraints carry the invariants (UNIQUE keys, CHECKs, FKs)."""

from app.models.charging import ChargingSession
from app.models.ledger import Hold, LedgerAccount, LedgerEntry, LedgerTransaction
from app.models.operations import Incident, IncidentNotification, LossCheck, UserNotification
from app.models.org import Building, Community, PowerCompany, PropertyCompany
from app.models.payments import (
    PaymentNotification,
    PaymentOrder,
    ReconciliationItem,
    ReconciliationRun,
    Refund,
)
from app.models.people import (
    AccountBinding,
    AuditEntry,
    ChargingAccount,
    ICCard,
    RevokedToken,
    SharedToken,
    User,
    WeChatSubscription,
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
    "ChargingSession",
    "Community",
    "DownlinkCommand",
    "Hold",
    "ICCard",
    "Incident",
    "IncidentNotification",
    "LedgerAccount",
    "LedgerEntry",
    "LedgerTransaction",
    "LossCheck",
    "MasterMeterReading",
    "MeterReading",
    "PaymentNotification",
    "PaymentOrder",
    "Pile",
    "PileEvent",
    "PileInbox",
    "Port",
    "PowerCompany",
    "PropertyCompany",
    "ReconciliationItem",
    "ReconciliationRun",
    "Refund",
    "RejectedUplink",
    "RevokedToken",
    "SharedToken",
    "TariffVersion",
    "User",
    "UserNotification",
    "WeChatSubscription",
]
