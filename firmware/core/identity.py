"""Who the gate is right now: venue, direction, trusted issuers and rules, as one frozen value.

At start the composition root makes the identity from the config and the stored
provisioning record. A provisioning code accepted while the gate runs replaces the whole
value at once (``IdentityCell.swap``): the gatekeeper and the event factory read the cell
for every code, so a venue, a direction or a set of issuer keys is never half changed,
and an issuer key the new record no longer carries stops working at the next code.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware.core.credentials.trust import TrustStore
from firmware.core.policy import Rules


@dataclass(frozen=True)
class GateIdentity:
    """The gate's identity and the rules that follow from it.

    Attributes:
        venue_id: the venue, or "" while unprovisioned.
        venue_name: the venue's name from the provisioning record ("" from the config).
        rules: the policy rules; ``rules.direction`` is the gate's direction.
        trust: the trusted issuer keys in force: the config's issuer directory plus the keys
            the provisioning record carries, nothing else.
        source: where venue and direction came from: ``config`` or ``provisioning``.
    """

    venue_id: str = ""
    venue_name: str = ""
    rules: Rules = field(default_factory=Rules)
    trust: TrustStore = field(default_factory=TrustStore)
    source: str = "config"

    @property
    def direction(self) -> str:
        """``in`` or ``out``."""
        return self.rules.direction

    @property
    def provisioned(self) -> bool:
        """True once the gate has a venue."""
        return bool(self.venue_id)


class IdentityCell:
    """Holds the current GateIdentity. Readers take ``current`` once per use.

    One writer: the provisioning feature (``swap``). Replacing the reference is atomic,
    so a reader on another thread sees the old value or the new one, never a mix.
    """

    def __init__(self, identity: GateIdentity) -> None:
        self._current = identity

    @property
    def current(self) -> GateIdentity:
        """The identity in force."""
        return self._current

    def swap(self, identity: GateIdentity) -> GateIdentity:
        """Put identity in force; return the one it replaced."""
        previous, self._current = self._current, identity
        return previous
