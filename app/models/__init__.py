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

__all__ = [
    "AccountBinding",
    "AuditEntry",
    "Building",
    "ChargingAccount",
    "Community",
    "Hold",
    "ICCard",
    "LedgerAccount",
    "LedgerEntry",
    "LedgerTransaction",
    "Pile",
    "Port",
    "PowerCompany",
    "PropertyCompany",
    "RevokedToken",
    "SharedToken",
    "TariffVersion",
    "User",
]
