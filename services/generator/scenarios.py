"""A reproducible stream of payment transactions with labelled fraud mixed in (pure: no Kafka).

Legit traffic comes from a population of accounts whose activity is skewed
(Zipf weights: a few accounts are very active, most are quiet; the busiest
make about one payment per simulated minute at most), paying merchants
(70 %, also skewed) or other accounts (30 %, uniform). Event times come from a simulated
clock: exponential gaps at ``event_rate`` transactions per simulated second.

Fraud arrives as *incidents*: each scenario starts incidents at its own rate
(incidents per 1,000 transactions); one incident schedules one or more
transactions at future event times, interleaved with legit traffic in event
time order:

- ``large_amount``: one payment of 900.00-5,000.00 to a merchant, online, from abroad.
- ``card_testing``: 10-30 payments of 0.01-2.00 from one source to many merchants within 2 minutes.
- ``velocity``: 10-25 ordinary payments from one source within 5 minutes.
- ``fan_in``: ``fan_in_sources`` distinct accounts each pay exactly 1,000.00 to one quiet
  account (a mule) within ``fan_in_window_s``.
- ``fan_out``: one source pays 10-20 never-seen accounts 100.00-899.99 within 15 minutes.
- ``structuring``: one source sends 4-8 amounts just under 10,000.00 within an hour.

Every generated transaction carries its label (scenario, incident id). With a
seed, the stream (ids, amounts, event times) is identical on every run with
the same settings.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

LEGIT = "legit"
SCENARIOS = ("large_amount", "card_testing", "velocity", "fan_in", "fan_out", "structuring")
STRUCTURING_THRESHOLD_CENTS = 1_000_000  # a 10,000.00 reporting threshold
# The traffic density the rules were tuned on (50,000 accounts at 10 simulated tx/s: on average
# 2e-4 tx/s, about 17 payments a day, per account). A denser population makes ordinary accounts
# look like velocity bursts.
ACCOUNTS_PER_TX_PER_S = 5_000
MIN_ACCOUNTS = 10_000
LARGE_AMOUNT_CENTS = 90_000  # the tutorial's rule: amount >= 900

# (country, currency, share of accounts)
_COUNTRIES = (
    ("DE", "EUR", 30),
    ("FR", "EUR", 20),
    ("NL", "EUR", 10),
    ("ES", "EUR", 10),
    ("GB", "GBP", 15),
    ("US", "USD", 10),
    ("CH", "CHF", 5),
)
_FOREIGN = ("BR", "NG", "RU", "CN", "VN", "UA", "PH")
# ISO-18245 merchant category codes with relative frequency
_MCCS = (
    ("5411", 30),  # grocery
    ("5812", 15),  # restaurants
    ("5541", 10),  # fuel
    ("5311", 10),  # department stores
    ("4111", 8),  # transport
    ("5912", 7),  # pharmacies
    ("5732", 5),  # electronics
    ("5999", 5),  # misc retail
    ("5815", 5),  # digital goods
    ("5944", 5),  # jewellery
)
_MERCHANT_CHANNELS = ("card", "card", "card", "online", "mobile")
_P2P_CHANNELS = ("transfer", "transfer", "mobile")
_DEFAULT_SEEDED_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
_BATCH = 512
_AMOUNT_CACHE = 1 << 15  # amounts (cents -> Decimal) remembered per stream


@dataclass(frozen=True)
class ScenarioRates:
    """Fraud incidents started per 1,000 transactions, per scenario (the generator's own: ``DEFAULT_RATES``)."""

    large_amount: float
    card_testing: float
    velocity: float
    fan_in: float
    fan_out: float
    structuring: float

    def as_dict(self) -> dict[str, float]:
        """Scenario name -> rate."""
        return {name: float(getattr(self, name)) for name in SCENARIOS}


DEFAULT_RATES = ScenarioRates(
    large_amount=2.0, card_testing=0.2, velocity=0.2, fan_in=0.02, fan_out=0.05, structuring=0.1
)


@dataclass(frozen=True)
class StreamConfig:
    """What the stream looks like; equal configs with a seed give equal streams."""

    seed: int | None = None
    accounts: int = 50_000
    merchants: int = 2_000
    event_rate: float = 10.0  # simulated transactions per event-time second
    start_ms: int | None = None  # first event time; default now, or 2026-01-01 when seeded
    rates: ScenarioRates = DEFAULT_RATES
    fan_in_sources: int = 50
    fan_in_window_s: float = 600.0


class Generated(NamedTuple):
    """One transaction (an Avro ``Transaction`` record) and its ground truth."""

    record: dict[str, Any]
    scenario: str
    incident_id: str | None

    @property
    def is_fraud(self) -> bool:
        return self.scenario != LEGIT

    def label(self) -> dict[str, Any]:
        """The ``TransactionLabel`` record of this transaction."""
        return {
            "transaction_id": self.record["transaction_id"],
            "scenario": self.scenario,
            "is_fraud": self.scenario != LEGIT,
            "incident_id": self.incident_id,
            "event_time": self.record["event_time"],
        }


def cents_to_decimal(cents: int) -> Decimal:
    """An exact two-decimal amount from integer cents."""
    return Decimal(cents).scaleb(-2)


class TransactionStream:
    """An endless iterator of ``Generated`` transactions in event-time order.

    ``record["event_time"]`` is epoch milliseconds (an int, which the Avro
    ``timestamp-millis`` writer takes as is).
    """

    def __init__(self, config: StreamConfig, *, now_ms: int | None = None) -> None:
        self.config = config
        rng = random.Random(config.seed)
        self._rng = rng
        if config.start_ms is not None:
            start = config.start_ms
        elif config.seed is not None:
            start = _DEFAULT_SEEDED_START_MS
        else:
            start = now_ms if now_ms is not None else _wall_ms()
        self._clock = float(start)
        self._mean_gap_ms = 1000.0 / config.event_rate

        numbers = rng.sample(range(10_000_000, 100_000_000), config.accounts)
        self.accounts = [f"ACC{n}" for n in numbers]
        self._known = set(self.accounts)
        country_weights = list(itertools.accumulate(w for _, _, w in _COUNTRIES))
        homes = rng.choices(range(len(_COUNTRIES)), cum_weights=country_weights, k=config.accounts)
        self._home = {a: _COUNTRIES[h][:2] for a, h in zip(self.accounts, homes, strict=True)}
        self._account_cum = list(itertools.accumulate(_activity(config.accounts, config.event_rate)))

        self.merchants = [f"MER{n}" for n in rng.sample(range(100_000, 1_000_000), config.merchants)]
        mcc_cum = list(itertools.accumulate(w for _, w in _MCCS))
        codes = rng.choices([m for m, _ in _MCCS], cum_weights=mcc_cum, k=config.merchants)
        self._mcc = dict(zip(self.merchants, codes, strict=True))
        self._merchant_cum = list(itertools.accumulate(_zipf(config.merchants, 1.0)))

        rates = config.rates.as_dict()
        self._scenario_names = [n for n in SCENARIOS if rates[n] > 0]
        self._scenario_cum = list(itertools.accumulate(rates[n] for n in self._scenario_names))
        self._incident_rate = sum(rates.values()) / 1000.0  # incidents per transaction
        self._incidents = 0
        self._emitted = 0
        self._next_incident = self._incident_gap()
        self._pending: list[tuple[float, int, Generated]] = []
        self._seq = itertools.count()
        self._next_legit = self._clock + rng.expovariate(1.0) * self._mean_gap_ms
        self._sources: list[str] = []
        self._targets: list[str] = []
        self._shops: list[str] = []
        self._amounts: dict[int, Decimal] = {}

    def __iter__(self) -> Iterator[Generated]:
        return self

    def __next__(self) -> Generated:
        if self._emitted >= self._next_incident:
            self._start_incident()
            self._next_incident = self._emitted + self._incident_gap()
        self._emitted += 1
        pending = self._pending
        if pending and pending[0][0] <= self._next_legit:
            when, _, generated = heapq.heappop(pending)
            self._clock = when
            return generated
        self._clock = self._next_legit
        self._next_legit += self._rng.expovariate(1.0) * self._mean_gap_ms
        return self._legit()

    def take(self, n: int) -> list[Generated]:
        """The next ``n`` transactions."""
        return [next(self) for _ in range(n)]

    @property
    def clock_ms(self) -> int:
        """Event time of the last transaction returned."""
        return int(self._clock)

    # -- legit traffic -------------------------------------------------------------------------

    def _legit(self) -> Generated:
        rng = self._rng
        if not self._sources:
            self._sources = rng.choices(self.accounts, cum_weights=self._account_cum, k=_BATCH)
            self._targets = rng.choices(self.accounts, k=_BATCH)  # P2P payees: uniform, no hubs
            self._shops = rng.choices(self.merchants, cum_weights=self._merchant_cum, k=_BATCH)
        source = self._sources.pop()
        country, currency = self._home[source]
        if rng.random() < 0.05:
            country = rng.choice(_FOREIGN)
        if rng.random() < 0.7:
            target = self._shops.pop()
            self._targets.pop()
            mcc: str | None = self._mcc[target]
            channel = rng.choice(_MERCHANT_CHANNELS)
            cents = int(math.exp(rng.gauss(3.55, 0.9)) * 100)  # log-normal, median ~35
        else:
            target = self._targets.pop()
            self._shops.pop()
            while target == source:
                target = self.accounts[rng.randrange(len(self.accounts))]
            mcc = None
            channel = rng.choice(_P2P_CHANNELS)
            cents = int(math.exp(rng.gauss(4.1, 1.0)) * 100)  # log-normal, median ~60
        cents = 50 if cents < 50 else 499_999 if cents > 499_999 else cents  # 0.50 to 4,999.99
        amount = self._amounts.get(cents)
        if amount is None:
            amount = self._amount(cents)
        record = {  # what _record builds, inline on this hot path
            "transaction_id": rng.getrandbits(128).to_bytes(16, "big").hex(),
            "source_account": source,
            "target_account": target,
            "amount": amount,
            "currency": currency,
            "event_time": int(self._clock),
            "channel": channel,
            "country": country,
            "merchant_category": mcc,
        }
        return Generated(record, LEGIT, None)

    # -- fraud incidents -----------------------------------------------------------------------

    def _incident_gap(self) -> int:
        if self._incident_rate <= 0:
            return 1 << 62
        return 1 + int(self._rng.expovariate(self._incident_rate))

    def _start_incident(self) -> None:
        rng = self._rng
        scenario = rng.choices(self._scenario_names, cum_weights=self._scenario_cum)[0]
        self._incidents += 1
        incident = f"{scenario}-{self._incidents:06d}"
        start = self._next_legit  # the incident begins with the next transaction
        getattr(self, f"_{scenario}")(incident, start)

    def _schedule(self, scenario: str, incident: str, when: float, record: dict[str, Any]) -> None:
        record["event_time"] = int(when)
        heapq.heappush(self._pending, (when, next(self._seq), Generated(record, scenario, incident)))

    def _victim(self) -> str:
        return self.accounts[self._rng.randrange(len(self.accounts))]

    def _quiet_account(self) -> str:
        n = len(self.accounts)
        return self.accounts[self._rng.randrange(n // 2, n)]  # the tail of the Zipf weights

    def _new_account(self) -> str:
        while True:
            account = f"ACC{self._rng.randrange(10_000_000, 100_000_000)}"
            if account not in self._known:
                self._known.add(account)
                return account

    def _large_amount(self, incident: str, start: float) -> None:
        rng = self._rng
        source = self._victim()
        merchant = self.merchants[rng.randrange(len(self.merchants))]
        cents = rng.randrange(LARGE_AMOUNT_CENTS, 500_001)
        record = self._record(
            source, merchant, cents, self._home[source][1], 0, "online", rng.choice(_FOREIGN), self._mcc[merchant]
        )
        self._schedule("large_amount", incident, start, record)

    def _card_testing(self, incident: str, start: float) -> None:
        rng = self._rng
        source = self._victim()
        country = rng.choice(_FOREIGN)
        for _ in range(rng.randint(10, 30)):
            merchant = self.merchants[rng.randrange(len(self.merchants))]
            record = self._record(
                source, merchant, rng.randint(1, 200), self._home[source][1], 0, "online", country, "5815"
            )
            self._schedule("card_testing", incident, start + rng.uniform(0, 120_000), record)

    def _velocity(self, incident: str, start: float) -> None:
        rng = self._rng
        source = self._victim()
        country, currency = self._home[source]
        for _ in range(rng.randint(10, 25)):
            merchant = self.merchants[rng.randrange(len(self.merchants))]
            record = self._record(
                source,
                merchant,
                rng.randint(2_000, 40_000),
                currency,
                0,
                rng.choice(_MERCHANT_CHANNELS),
                country,
                self._mcc[merchant],
            )
            self._schedule("velocity", incident, start + rng.uniform(0, 300_000), record)

    def _fan_in(self, incident: str, start: float) -> None:
        rng = self._rng
        mule = self._quiet_account()
        window_ms = self.config.fan_in_window_s * 1000.0
        sources = rng.sample(self.accounts, min(self.config.fan_in_sources, len(self.accounts) - 1))
        for source in sources:
            if source == mule:
                source = self._new_account()
            country, currency = self._home.get(source, self._home[mule])
            record = self._record(source, mule, 100_000, currency, 0, "transfer", country, None)
            self._schedule("fan_in", incident, start + rng.uniform(0, window_ms), record)

    def _fan_out(self, incident: str, start: float) -> None:
        rng = self._rng
        source = self._victim()
        country, currency = self._home[source]
        for _ in range(rng.randint(10, 20)):
            record = self._record(
                source,
                self._new_account(),
                rng.randint(10_000, 89_999),
                currency,
                0,
                rng.choice(_P2P_CHANNELS),
                country,
                None,
            )
            self._schedule("fan_out", incident, start + rng.uniform(0, 900_000), record)

    def _structuring(self, incident: str, start: float) -> None:
        rng = self._rng
        source = self._victim()
        country, currency = self._home[source]
        target = self._quiet_account()
        for _ in range(rng.randint(4, 8)):
            cents = rng.randint(STRUCTURING_THRESHOLD_CENTS * 9 // 10, STRUCTURING_THRESHOLD_CENTS - 1)
            record = self._record(source, target, cents, currency, 0, "transfer", country, None)
            self._schedule("structuring", incident, start + rng.uniform(0, 3_600_000), record)

    def _amount(self, cents: int) -> Decimal:
        """``cents`` as an exact two-decimal amount, remembered (amounts repeat; Decimals are immutable)."""
        amount = self._amounts.get(cents)
        if amount is None:
            amount = cents_to_decimal(cents)
            if len(self._amounts) < _AMOUNT_CACHE:
                self._amounts[cents] = amount
        return amount

    def _record(
        self,
        source: str,
        target: str,
        cents: int,
        currency: str,
        event_time: int,
        channel: str | None,
        country: str | None,
        mcc: str | None,
    ) -> dict[str, Any]:
        return {
            "transaction_id": self._rng.getrandbits(128).to_bytes(16, "big").hex(),
            "source_account": source,
            "target_account": target,
            "amount": self._amount(cents),
            "currency": currency,
            "event_time": event_time,
            "channel": channel,
            "country": country,
            "merchant_category": mcc,
        }


def default_accounts(event_rate: float) -> int:
    """The population that keeps each account's mean activity at the tuned density (``ACCOUNTS_PER_TX_PER_S``
    accounts per simulated tx/s, at least ``MIN_ACCOUNTS``)."""
    return max(MIN_ACCOUNTS, round(ACCOUNTS_PER_TX_PER_S * event_rate))


def _zipf(n: int, exponent: float) -> list[float]:
    return [1.0 / (rank**exponent) for rank in range(1, n + 1)]


def _activity(n: int, event_rate: float) -> list[float]:
    """Skewed account activity: Zipf shares, each capped at 20x the mean share and at about one
    transaction per simulated minute, so the busiest accounts stay plausible people. The capped
    shares are not renormalised here; the sampler draws from their sum, which lifts the busiest
    accounts to about 35x the mean share (50,000 accounts at 10 tx/s; kept so seeded streams stay
    as they were)."""
    weights = _zipf(n, 1.0)
    total = sum(weights)
    cap = max(min(20.0 / n, (1.0 / 60.0) / event_rate), 1.0 / n)
    return [min(w / total, cap) for w in weights]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000
