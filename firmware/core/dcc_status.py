"""What a verified EU Digital COVID Certificate (``HC1:``) says, as plain data. Pure.

Kept apart from ``firmware.core.credentials.dcc`` so that ``firmware.core.model`` can refer to
it without an import circle. Times are Unix seconds (UTC); dates stay ISO text
(``YYYY-MM-DD``) as the certificate carries them.
"""

from __future__ import annotations

from dataclasses import dataclass

KIND_VACCINATION = "v"
KIND_TEST = "t"
KIND_RECOVERY = "r"
KINDS = (KIND_VACCINATION, KIND_TEST, KIND_RECOVERY)
KIND_NAMES = {KIND_VACCINATION: "vaccination", KIND_TEST: "test", KIND_RECOVERY: "recovery"}

# The COVID-19 vaccines licensed in Vietnam in 2022, as DCC medicinal product (``mp``) codes:
# Vaxzevria, Sputnik V, Sinopharm BIBP, Hayat-Vax (Sinopharm BIBP made in the UAE), Comirnaty,
# Spikevax, Janssen, Abdala. The default of ``[policy.dcc] products``.
VN_2022_VACCINE_PRODUCTS = ("EU/1/21/1529", "Sputnik-V", "BBIBP-CorV", "Hayat-Vax", "EU/1/20/1528",
                            "EU/1/20/1507", "EU/1/20/1525", "Abdala")


@dataclass(frozen=True)
class DccStatus:
    """The fields of one DCC that the gate's rules read.

    Attributes:
        kind: ``"v"``, ``"t"`` or ``"r"``: the one entry the certificate holds.
        country: claim 1, the issuing country (ISO 3166-1 alpha-2), or None.
        issued_at_s: claim 6 (``iat``), or None.
        expires_s: claim 4 (``exp``), or None.
        dsc_not_before_s, dsc_not_after_s: validity period of the signer certificate (DSC)
            that verified the signature.
        family_name, given_name: ``nam.fn`` / ``nam.gn`` (NFC), or the standardised
            ``fnt`` / ``gnt`` when the plain form is absent; "" when neither is present.
        birth_date: ``dob`` as written (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or "").
        certificate_id: ``ci`` of the entry (the UVCI).
        target: ``tg`` of the entry (840539006 is COVID-19).
        product: vaccination ``mp`` (medicinal product code).
        dose_number, total_doses: vaccination ``dn`` and ``sd``.
        vaccination_date: vaccination ``dt``.
        test_type: test ``tt`` (LOINC: LP6464-4 NAAT/PCR, LP217198-3 rapid antigen).
        sample_time_s: test ``sc`` in Unix seconds.
        test_result: test ``tr`` (260415000 not detected, 260373001 detected).
        first_positive_date, valid_from, valid_until: recovery ``fr``, ``df``, ``du``.
        trust_list_installed_s: when the trust list that held the signer was installed, if known.
    """

    kind: str
    country: str | None
    issued_at_s: float | None
    expires_s: float | None
    dsc_not_before_s: float
    dsc_not_after_s: float
    family_name: str
    given_name: str
    birth_date: str
    certificate_id: str
    target: str
    product: str | None = None
    dose_number: int | None = None
    total_doses: int | None = None
    vaccination_date: str | None = None
    test_type: str | None = None
    sample_time_s: float | None = None
    test_result: str | None = None
    first_positive_date: str | None = None
    valid_from: str | None = None
    valid_until: str | None = None
    trust_list_installed_s: float | None = None

    @property
    def kind_name(self) -> str:
        """``vaccination``, ``test`` or ``recovery``."""
        return KIND_NAMES[self.kind]

    @property
    def birth_year(self) -> str:
        """The four-digit birth year, or "" when the certificate has none."""
        return self.birth_date[:4]
