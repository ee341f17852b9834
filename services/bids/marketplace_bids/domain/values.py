"""Value types shared by the bids domain: statuses, Money, constrained strings."""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

# Active ISO 4217 codes of real currencies (funds, metals and test codes left out).
_ISO_4217_TEXT = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR
    FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD
    JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT
    MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG
    QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB
    TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF
    XPF YER ZAR ZMW ZWG ZWL
"""
ISO_4217_CODES: frozenset[str] = frozenset(_ISO_4217_TEXT.split())

NANOS_PER_UNIT = 1_000_000_000
MAX_TITLE = 200
MAX_TEXT = 10_000
MAX_REASON = 1_000
MAX_RESULT = 100_000
MAX_ID = 128


class TaskStatus(enum.StrEnum):
    """Task lifecycle: PENDING -> PROCESSING -> COMPLETED | FAILED."""

    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class BidStatus(enum.StrEnum):
    """Bid lifecycle: PENDING -> WITHDRAWN | ACCEPTED | REJECTED."""

    PENDING = "PENDING"
    WITHDRAWN = "WITHDRAWN"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"


def _canonical_uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise PydanticCustomError("uuid", "must be a UUID") from None


# C0 controls but tab, LF and CR (descriptions and proposals are multi-line), DEL, C1.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Bidirectional embeddings, overrides and isolates: they make text display in
# another order than it is stored (a proposal that reads differently to the
# client than to the audit trail).
_BIDI_CONTROL = re.compile("[\u202a-\u202e\u2066-\u2069]")


def _no_control_chars(value: str) -> str:
    if _CONTROL.search(value):
        raise PydanticCustomError("text", "must not contain control characters")
    if _BIDI_CONTROL.search(value):
        raise PydanticCustomError("text", "must not contain bidirectional control characters")
    return value


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL (SQLite can): refusing it here gives the
    # same INVALID_ARGUMENT, naming the field, on both backends.
    if "\x00" in value:
        raise PydanticCustomError("text", "must not contain NUL characters")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "must not be blank")
    return value


_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]*")


def _slug(value: str) -> str:
    # fullmatch: "$" would also accept a trailing newline.
    if not _SLUG.fullmatch(value):
        raise PydanticCustomError(
            "identifier", "must start with a letter or digit and hold only letters, digits, ._:@-"
        )
    return value


Uuid = Annotated[str, AfterValidator(_canonical_uuid)]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID), AfterValidator(_slug)]
Title = Annotated[
    str, Field(max_length=MAX_TITLE), AfterValidator(_not_blank), AfterValidator(_no_control_chars)
]
LongText = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_no_control_chars)]
Reason = Annotated[str, Field(max_length=MAX_REASON), AfterValidator(_no_control_chars)]
# Text the execution service produces (an LLM's answer, a provider's error)
# may carry any character PostgreSQL can store; people's text may not carry
# control characters (but tab and newlines) or bidirectional controls.
ResultText = Annotated[str, Field(max_length=MAX_RESULT), AfterValidator(_no_nul)]
MessageText = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_no_nul)]


class Money(BaseModel):
    """An amount in one ISO 4217 currency, shaped like google.type.Money.

    ``units`` and ``nanos`` carry one sign, ``|nanos| < 1e9``, and the amount is above zero.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    currency_code: str
    units: int = Field(ge=-(2**63), le=2**63 - 1)
    nanos: int = Field(gt=-NANOS_PER_UNIT, lt=NANOS_PER_UNIT)

    @field_validator("currency_code")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if value not in ISO_4217_CODES:
            raise PydanticCustomError("currency", "must be an upper-case ISO 4217 currency code")
        return value

    @field_validator("nanos")
    @classmethod
    def _same_sign(cls, value: int, info: ValidationInfo) -> int:
        units = info.data.get("units")
        if isinstance(units, int) and units * value < 0:
            raise PydanticCustomError("sign", "units and nanos must have the same sign")
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _positive(cls, data: Any, handler: ModelWrapValidatorHandler[Money]) -> Money:
        # An "after" validator would not run once a field failed, so a bad currency
        # would hide a zero amount: the raw amount is checked too, and reported
        # together with the field errors (every violated field is listed).
        try:
            money = handler(data)
        except ValidationError as exc:
            if not _raw_amount_not_positive(data):
                raise
            details = [*line_errors(exc), _amount_error(data)]
            raise ValidationError.from_exception_data(exc.title, details) from None
        if money.units <= 0 and money.nanos <= 0:
            raise PydanticCustomError("amount", "amount must be above zero")
        return money

    def as_decimal(self) -> Decimal:
        """The amount as an exact Decimal (for display and comparisons)."""
        return Decimal(self.units) + Decimal(self.nanos) / NANOS_PER_UNIT


def _raw_amount_not_positive(data: Any) -> bool:
    # Mixed signs are the "sign" error alone; only a same-sign amount <= 0 is added.
    if not isinstance(data, Mapping):
        return False
    units, nanos = data.get("units"), data.get("nanos")
    if type(units) is not int or type(nanos) is not int:
        return False
    return units <= 0 and nanos <= 0


def _amount_error(data: Any) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError("amount", "amount must be above zero"), loc=(), input=data
    )


def line_errors(exc: ValidationError) -> list[InitErrorDetails]:
    """The errors of ``exc`` as details for a new ValidationError (messages as rendered)."""
    return [
        InitErrorDetails(
            type=PydanticCustomError(error["type"], error["msg"]),
            loc=error["loc"],
            input=error["input"],
        )
        for error in exc.errors(include_url=False)
    ]


def violation_field(loc: tuple[Any, ...], ctx: dict[str, Any] | None) -> str:
    """The dotted proto field path of a pydantic error location."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    extra = (ctx or {}).get("field")
    if extra:
        parts.append(str(extra))
    return ".".join(parts) or "request"
