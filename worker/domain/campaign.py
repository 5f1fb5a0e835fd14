"""The stock campaign (issue 14): its configuration and the planner's arithmetic. Pure: no I/O, no clock.

``config/campaign.yaml`` (read by :mod:`worker.adapters.config_files`, validated here) says, for each
segment of the stock file, its priority, whether the department invites it, on which channels the
first message goes, and what appointment it is for (co-diagnostic, milestone interview, diagnostic,
contract renewal).

The planner (:func:`plan`) decides, working day after working day, how many people of each
organisation's appointment book to invite, and whom: the waiting people of the book in priority
order (then the oldest droit first), never more than the book can absorb.

How an invitation fills a book (:func:`load_profile`): of the people invited on day *d*, a share *r*
(the expected response rate, ``RELANCE_CAMPAIGN_RESPONSE_RATE``) books an appointment; it is counted
on the book's first open day on or after *d* + the first step's ``respond_days``. The others are
convoked by their path and hold a fixed slot: counted on the first open day on or after *d* + the
response periods of the path's invitations + the convocation's ``min_days`` + 1 (a campaign case's
convocation is fixed from the next day on, whole days). A path that starts with a convocation (France
Travail's) counts one slot at *d* + ``min_days`` + 1. Each open day of a book has
``units`` places (slot times × capacity, ``config/territory.yaml``), of which ``reserve`` are kept
for the flux (:func:`day_reserve`); an invitation is planned only if every one of its loads fits the
campaign's share of its day (``units - reserve``). Loads are exact fractions: nothing is rounded.

The projection (:func:`project`): the expected number of people seen by each date (every load of
every invitation, past and planned, counted on its day), the dates the targets are reached, and for a
target missed, how many more places a week in each organisation concerned would meet it (found by
planning again with them).
"""
from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from worker.domain.calendar import BusinessCalendar
from worker.domain.policy import CHANNELS, WEEKDAYS, Policy, Slots, Territory

# A campaign case's convocation is fixed from the day after its earliest moment (whole days: the last
# places of each day stay the flux's; worker.adapters.store.repository.find_slot).
CONVOCATION_DAY_AFTER = 1
MAX_EXTRA_PER_WEEK = 400  # places a week per organisation: beyond, a target is out of reach by capacity
BOOK_RULES = ("person", "department")


# --------------------------------------------------------------------------- configuration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _text(v: str | None) -> str | None:
    if v is not None and not v.strip():
        raise ValueError("ne peut pas être vide")
    return v


class AppointmentType(_Strict):
    """What an invitation of the campaign is for, as the letters and the agents say it."""
    label: str  # "co-diagnostic": lists and reports
    name: str  # "un co-diagnostic": in a sentence ("prenez rendez-vous pour un co-diagnostic")
    purpose: str  # what it is for, in short sentences (the letter and the e-mail)
    meet: str | None = None  # whom the person meets, when not the organisation's usual (territory.yaml)

    _texts = field_validator("label", "name", "purpose", "meet")(_text)


class Segment(_Strict):
    label: str  # French, for agents
    priority: int = 1  # 1 first; the stock file's `priority` column, when given, wins
    invited: bool = True  # false: imported and counted, never invited by the department (MSA, valid contract)
    who: str = ""  # who contacts the person ("CD + FT"), for agents
    channels: tuple[str, ...] = ()  # the first message's channels; "sms|email": the first usable of them
    appointment: str | None = None  # a key of appointment_types
    book: str = "person"  # whose appointment book: the person's organisation, or the Département's CD
    # organisation for the person's postcode (territory.yaml department.review_organisations)
    path: str | None = None  # None: routed from the person's orientation, like the flux
    renews_as: str | None = None  # not invited now: joins the campaign as this segment when the
    renewal_days: int = 60  # stock file's contract_end is this many days away (or past)

    _label = field_validator("label")(_text)

    @field_validator("priority")
    @classmethod
    def _priority(cls, v: int) -> int:
        if not 1 <= v <= 9:
            raise ValueError("une priorité de 1 (la première) à 9")
        return v

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for entry in v:
            for c in entry.split("|"):
                if c not in CHANNELS:
                    raise ValueError(f"canal inconnu {c!r} (attendu : {', '.join(CHANNELS)}, ou deux au choix : sms|email)")
        return v

    @field_validator("book")
    @classmethod
    def _book(cls, v: str) -> str:
        if v not in BOOK_RULES:
            raise ValueError("doit valoir person (l'organisation de la personne) ou department "
                             "(l'organisation CD de son code postal)")
        return v

    @field_validator("renewal_days")
    @classmethod
    def _renewal(cls, v: int) -> int:
        if not 0 <= v <= 366:
            raise ValueError("un nombre de jours de 0 à 366")
        return v


class FluxReserve(_Strict):
    """The places of each book kept for the flux: ``max(per_week, flux measured × margin)`` a week."""
    per_week: int = 2  # at least this many places a week per organisation (organisations: per code)
    margin: float = 1.5  # the flux cases opened over the last `weeks` weeks, per week, times this
    weeks: int = 8
    organisations: dict[str, int] = {}

    @field_validator("per_week")
    @classmethod
    def _per_week(cls, v: int) -> int:
        if v < 0:
            raise ValueError("un nombre de places positif ou nul")
        return v

    @field_validator("organisations")
    @classmethod
    def _per_organisation(cls, v: dict[str, int]) -> dict[str, int]:
        for code, n in v.items():
            if n < 0:
                raise ValueError(f"{code} : un nombre de places positif ou nul")
        return v

    @field_validator("margin")
    @classmethod
    def _margin(cls, v: float) -> float:
        if not 1 <= v <= 10:
            raise ValueError("un coefficient de 1 à 10")
        return v

    @field_validator("weeks")
    @classmethod
    def _weeks(cls, v: int) -> int:
        if not 1 <= v <= 52:
            raise ValueError("de 1 à 52 semaines")
        return v

    def floor(self, organisation: str) -> int:
        return self.organisations.get(organisation, self.per_week)


class CampaignConfig(_Strict):
    appointment_types: dict[str, AppointmentType]
    segments: dict[str, Segment]
    flux_reserve: FluxReserve = FluxReserve()

    @model_validator(mode="after")
    def _coherent(self) -> "CampaignConfig":
        if not self.segments:
            raise ValueError("segments: au moins un segment")
        for key, seg in self.segments.items():
            if seg.invited and seg.appointment is None:
                raise ValueError(f"segments.{key}.appointment: obligatoire pour un segment invité")
            if seg.appointment is not None and seg.appointment not in self.appointment_types:
                raise ValueError(f"segments.{key}.appointment: type de rendez-vous inconnu {seg.appointment!r} "
                                 f"(attendu : {', '.join(self.appointment_types)})")
            if seg.renews_as is not None:
                target = self.segments.get(seg.renews_as)
                if target is None or not target.invited or seg.invited:
                    raise ValueError(f"segments.{key}.renews_as: {seg.renews_as!r} doit être un segment invité, "
                                     "et ce segment-ci non invité")
        return self

    def check(self, policy: Policy, territory: Territory) -> None:
        """Against the paths and the territory: ValueError("key: problem") in French."""
        for key, seg in self.segments.items():
            if seg.path is not None and seg.path not in policy.paths:
                raise ValueError(f"segments.{key}.path: parcours inconnu {seg.path!r} "
                                 f"(attendu : {', '.join(policy.paths)})")
        for code in self.flux_reserve.organisations:
            if code not in territory.organisations:
                raise ValueError(f"flux_reserve.organisations.{code}: organisation inconnue de config/territory.yaml")

    def segment(self, key: str) -> Segment | None:
        return self.segments.get(key)

    def order(self, key: str) -> int:
        """The segment's rank in the file (ties between equal priorities are broken by the droit)."""
        return list(self.segments).index(key) if key in self.segments else len(self.segments)


def parse_targets(text: str) -> tuple[tuple[Fraction, dt.date], ...]:
    """``"20%:2023-07-15,80%:2023-12-31"`` -> ((1/5, 2023-07-15), (4/5, 2023-12-31)); ValueError in French."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        share, sep, day = part.partition(":")
        try:
            pct = Fraction(share.strip().rstrip("%").strip().replace(",", "."))
            when = dt.date.fromisoformat(day.strip())
        except ValueError:
            raise ValueError(f"cible {part!r} illisible : POURCENTAGE%:AAAA-MM-JJ attendu "
                             "(ex. 20%:2023-07-15,80%:2023-12-31)") from None
        if not sep or not 0 < pct <= 100:
            raise ValueError(f"cible {part!r} : un pourcentage de 1 à 100 avant la date")
        out.append((pct / 100, when))
    out.sort(key=lambda t: t[1])
    if not out:
        raise ValueError("au moins une cible (ex. 20%:2023-07-15,80%:2023-12-31)")
    for (a, da), (b, db) in zip(out, out[1:]):
        if da == db or b < a:
            raise ValueError("des cibles à des dates distinctes, croissantes avec le pourcentage")
    return tuple(out)


# --------------------------------------------------------------------------- the books


@dataclass(frozen=True)
class BookDay:
    units: int  # places that day: the slot times × their capacity
    reserve: int = 0  # kept for the flux

    @property
    def free(self) -> int:
        """What the campaign may fill."""
        return max(0, self.units - self.reserve)


Books = dict[str, dict[dt.date, BookDay]]  # organisation -> open day -> places


def slot_weekdays(slots: Slots) -> frozenset[int]:
    return frozenset(WEEKDAYS.index(d) for d in slots.weekdays)


def weekly_reserve(floor: int, flux_cases: int, weeks: int, margin: float) -> int:
    """Places a week kept for the flux: the floor, or the flux measured (cases opened over ``weeks``
    weeks, per week, times ``margin``) when it is more."""
    return max(floor, math.ceil(Fraction(flux_cases, weeks) * Fraction(str(margin))))


def day_reserve(weekly: int, slots: Slots) -> int:
    """The weekly reserve spread over the book's open weekdays (rounded up: never less than promised)."""
    return math.ceil(weekly / len(slots.weekdays)) if weekly > 0 else 0


def build_books(territory: Territory, cal: BusinessCalendar, start: dt.date, end: dt.date,
                reserve_per_week: Mapping[str, int], organisations: Iterable[str] | None = None,
                extra_per_week: Mapping[str, int] | None = None,
                known_flux: Mapping[str, Mapping[dt.date, int]] | None = None) -> Books:
    """Each organisation's open days from ``start`` to ``end`` (working days among its slot weekdays),
    their places and the flux's reserve: the weekly reserve spread over the days, or the flux known
    for that day (its appointments fixed, the convocations its waiting cases will need) when that is
    more; ``extra_per_week`` adds places, spread over each week's days."""
    books: Books = {}
    extra_per_week = extra_per_week or {}
    known_flux = known_flux or {}
    for code in organisations if organisations is not None else territory.organisations:
        slots = territory.organisations[code].convocation
        days = slot_weekdays(slots)
        units = len(slots.times) * slots.capacity
        reserve = day_reserve(reserve_per_week.get(code, 0), slots)
        known = known_flux.get(code, {})
        book: dict[dt.date, BookDay] = {}
        day = start
        while day <= end:
            if day.weekday() in days and cal.is_working_day(day):
                book[day] = BookDay(units, min(max(reserve, known.get(day, 0)), units))
            day += dt.timedelta(days=1)
        extra = extra_per_week.get(code, 0)
        if extra:
            weeks: dict[dt.date, list[dt.date]] = {}
            for d in book:
                weeks.setdefault(d - dt.timedelta(days=d.weekday()), []).append(d)
            for open_days in weeks.values():
                for i, d in enumerate(sorted(open_days)):
                    more = extra // len(open_days) + (1 if i < extra % len(open_days) else 0)
                    book[d] = BookDay(book[d].units + more, book[d].reserve)
        books[code] = book
    return books


def open_day_on_or_after(slots: Slots, cal: BusinessCalendar, day: dt.date, horizon_days: int = 366) -> dt.date | None:
    """The first day on or after ``day`` the book is open (a working day among its slot weekdays)."""
    days = slot_weekdays(slots)
    for _ in range(horizon_days):
        if day.weekday() in days and cal.is_working_day(day):
            return day
        day += dt.timedelta(days=1)
    return None


def flux_needs(units: Mapping[dt.date, int], fixed: Mapping[dt.date, int],
               demand: Mapping[dt.date, int]) -> dict[dt.date, int]:
    """The places the flux needs on each open day of a book: its appointments ``fixed`` there, plus the
    convocations its waiting cases will need from each day on (``demand``, by earliest day), placed as
    the slot search would place them: on that day while places remain, the rest on the next open days."""
    out = dict(fixed)
    carry = 0
    pending = sorted(demand.items())
    i = 0
    for day in sorted(units):
        while i < len(pending) and pending[i][0] <= day:
            carry += pending[i][1]
            i += 1
        if carry:
            room = max(0, units[day] - fixed.get(day, 0))
            placed = min(room, carry)
            if placed:
                out[day] = out.get(day, 0) + placed
            carry -= placed
    return out


def silent_convocation(policy: Policy, path: str, step: str | None, phase: str,
                       due_at: dt.datetime | None) -> dt.datetime | None:
    """When a case waiting on an invitation will need its convocation slot if the person stays silent
    (the earliest moment its slot may be): the response periods of the invitations still ahead, then
    the convocation's ``min_days``. None when it is not waiting on an invitation, or a human step
    (a task) comes first."""
    if due_at is None or step is None or phase not in ("enter", "waiting") or not policy.path(path).has(step):
        return None
    spec = policy.path(path)
    current = spec.step(step)
    if current.kind != "invite":
        return None
    at = due_at + dt.timedelta(days=(current.respond_days or 0) if phase == "enter" else 0)
    nxt, seen = current.next, {current.id}
    while nxt is not None and nxt not in seen:
        seen.add(nxt)
        s = spec.step(nxt)
        if s.kind == "appointment":
            return at + dt.timedelta(days=s.min_days or 0)
        if s.kind != "invite":
            return None
        at += dt.timedelta(days=s.respond_days or 0)
        nxt = s.next
    return None


# --------------------------------------------------------------------------- loads


@dataclass(frozen=True)
class Load:
    days: int  # after the invitation
    share: Fraction  # of a place


def load_profile(policy: Policy, path: str, response_rate: Fraction) -> tuple[Load, ...]:
    """The places one invitation on ``path`` is expected to take, and when (see the module's docstring)."""
    spec = policy.path(path)
    first = spec.first
    if first.kind == "appointment":  # a campaign's convocation takes whole days, from the day after
        return (Load((first.min_days or 0) + CONVOCATION_DAY_AFTER, Fraction(1)),)
    booking = Load(first.respond_days or 0, Fraction(response_rate))
    lag, step, seen = 0, first, set()
    while step is not None and step.id not in seen:
        seen.add(step.id)
        if step.kind == "appointment":
            rest = 1 - Fraction(response_rate)
            loads = (booking, Load(lag + (step.min_days or 0) + CONVOCATION_DAY_AFTER, rest))
            return tuple(x for x in loads if x.share > 0)
        if step.kind == "invite":
            lag += step.respond_days or 0
        elif step.kind not in ("task", "handoff"):
            break
        step = spec.step(step.next) if step.next else None
    return (booking,) if booking.share > 0 else ()


def max_lag(profiles: Mapping[str, Sequence[Load]]) -> int:
    """The longest delay, in days, between an invitation and the place it fills."""
    return max((ld.days for p in profiles.values() for ld in p), default=0)


def _landing(open_days: Sequence[dt.date], target: dt.date) -> dt.date | None:
    i = bisect.bisect_left(open_days, target)
    return open_days[i] if i < len(open_days) else None


# --------------------------------------------------------------------------- the planner


@dataclass(frozen=True)
class Member:
    """A person of the stock waiting for the campaign."""
    id: int
    organisation: str  # whose book
    segment: str
    priority: int
    path: str
    droit_opened_on: dt.date
    available_on: dt.date | None = None  # a contract up for renewal: not before this day
    order: int = 0  # the segment's rank in config/campaign.yaml (ties between equal priorities)

    @property
    def rank(self) -> tuple:
        return (self.priority, self.droit_opened_on, self.order, self.id)


@dataclass(frozen=True)
class Invitation:
    day: dt.date
    member: int
    organisation: str
    path: str
    segment: str = ""
    priority: int = 0


@dataclass
class Plan:
    start: dt.date
    end: dt.date
    invitations: list[Invitation]  # planned from start, in order
    used: dict[str, dict[dt.date, Fraction]]  # organisation -> day -> places expected (past and planned)
    books: Books
    waiting: list[int] = field(default_factory=list)  # members not invited by the end


def _working_days(cal: BusinessCalendar, start: dt.date, end: dt.date) -> Iterable[dt.date]:
    day = start
    while day <= end:
        if cal.is_working_day(day):
            yield day
        day += dt.timedelta(days=1)


def _place(open_days: dict[str, list[dt.date]], inv: Invitation,
           profile: Sequence[Load]) -> list[tuple[dt.date, Fraction]] | None:
    """The (day, share) an invitation fills; None when a load lands beyond the known book."""
    out = []
    for load in profile:
        day = _landing(open_days.get(inv.organisation, ()), inv.day + dt.timedelta(days=load.days))
        if day is None:
            return None
        out.append((day, load.share))
    return out


def plan(members: Iterable[Member], *, start: dt.date, end: dt.date, books: Books,
         profiles: Mapping[str, Sequence[Load]], cal: BusinessCalendar,
         past: Sequence[Invitation] = ()) -> Plan:
    """Who to invite each working day from ``start`` to ``end``: per book, the waiting members in rank
    order, as long as each load of the next one fits its day (strict order: the first that does not
    fit stops that book for the day). ``past`` invitations fill the books first."""
    open_days = {code: sorted(book) for code, book in books.items()}
    used: dict[str, dict[dt.date, Fraction]] = {code: {} for code in books}
    for inv in past:
        fill = used.setdefault(inv.organisation, {})
        for day, share in _place(open_days, inv, profiles[inv.path]) or ():
            fill[day] = fill.get(day, Fraction(0)) + share
    queues: dict[str, list[Member]] = {}
    for m in members:
        queues.setdefault(m.organisation, []).append(m)
    for q in queues.values():
        q.sort(key=lambda m: m.rank)
    planned: list[Invitation] = []
    for day in _working_days(cal, start, end):
        if not any(queues.values()):
            break
        for code in sorted(queues):
            queue, book, fill = queues[code], books.get(code, {}), used.setdefault(code, {})
            i = 0
            while i < len(queue):
                m = queue[i]
                if m.available_on is not None and m.available_on > day:
                    i += 1
                    continue
                inv = Invitation(day, m.id, code, m.path, m.segment, m.priority)
                placed = _place(open_days, inv, profiles[m.path])
                if placed is None or any(fill.get(d, Fraction(0)) + s > book[d].free for d, s in placed):
                    break
                for d, s in placed:
                    fill[d] = fill.get(d, Fraction(0)) + s
                planned.append(inv)
                queue.pop(i)
    waiting = sorted(m.id for q in queues.values() for m in q)
    return Plan(start=start, end=end, invitations=planned, used=used, books=books, waiting=waiting)


# --------------------------------------------------------------------------- the projection


def seen_curve(invitations: Iterable[Invitation], books: Books,
               profiles: Mapping[str, Sequence[Load]]) -> dict[dt.date, Fraction]:
    """People expected to be seen, per day (every load of every invitation on its day)."""
    open_days = {code: sorted(book) for code, book in books.items()}
    curve: dict[dt.date, Fraction] = {}
    for inv in invitations:
        for day, share in _place(open_days, inv, profiles[inv.path]) or ():
            curve[day] = curve.get(day, Fraction(0)) + share
    return curve


def seen_by(curve: Mapping[dt.date, Fraction], day: dt.date) -> Fraction:
    return sum((v for d, v in curve.items() if d <= day), Fraction(0))


def reached_on(curve: Mapping[dt.date, Fraction], needed: Fraction) -> dt.date | None:
    total = Fraction(0)
    for day in sorted(curve):
        total += curve[day]
        if total >= needed:
            return day
    return None if needed > 0 else min(curve, default=None)


@dataclass(frozen=True)
class TargetCheck:
    share: Fraction
    on: dt.date
    needed: int  # people to be seen by then
    expected: Fraction  # people expected to be seen by then
    reached_on: dt.date | None
    extra_per_week: int | None = None  # a missed target: places a week more in each organisation concerned
    organisations: tuple[str, ...] = ()  # ... namely these (those with people waiting)
    reachable: bool = True  # False: too close to the start for any capacity (the first appointments come later)

    @property
    def met(self) -> bool:
        return self.expected >= self.needed


@dataclass
class Projection:
    plan: Plan
    past: list[Invitation]
    curve: dict[dt.date, Fraction]
    population: int
    targets: list[TargetCheck]


def project(members: Sequence[Member], *, start: dt.date, end: dt.date, territory: Territory,
            cal: BusinessCalendar, reserve_per_week: Mapping[str, int], profiles: Mapping[str, Sequence[Load]],
            past: Sequence[Invitation], targets: Sequence[tuple[Fraction, dt.date]], population: int,
            book_end: dt.date | None = None,
            known_flux: Mapping[str, Mapping[dt.date, int]] | None = None) -> Projection:
    """The plan from ``start`` to ``end``, the curve of people seen, and each target checked (a missed
    one with the extra places a week that would meet it)."""
    first = min([start] + [inv.day for inv in past])
    book_end = book_end or end + dt.timedelta(days=max_lag(profiles) + 14)
    organisations = sorted(code for code in {m.organisation for m in members} | {inv.organisation for inv in past}
                           if code in territory.organisations)

    def run(extra: Mapping[str, int] | None = None) -> tuple[Plan, dict[dt.date, Fraction]]:
        books = build_books(territory, cal, first, book_end, reserve_per_week, organisations, extra, known_flux)
        p = plan(members, start=start, end=end, books=books, profiles=profiles, cal=cal, past=past)
        return p, seen_curve(list(past) + p.invitations, books, profiles)

    result, curve = run()
    checks = []
    for share, on in targets:
        needed = math.ceil(share * population)
        expected = seen_by(curve, on)
        check = TargetCheck(share, on, needed, expected, reached_on(curve, Fraction(needed)))
        if not check.met and on >= start:  # a date gone by: no place added now changes it
            concerned = _late_books(result, members, profiles, on)
            extra = _search_extra(lambda k: seen_by(run({o: k for o in concerned})[1], on) >= needed)
            check = TargetCheck(share, on, needed, expected, check.reached_on, extra, concerned, extra is not None)
        elif not check.met:
            check = dataclasses.replace(check, reachable=False)
        checks.append(check)
    return Projection(plan=result, past=list(past), curve=curve, population=population, targets=checks)


def _late_books(result: Plan, members: Sequence[Member], profiles: Mapping[str, Sequence[Load]],
                on: dt.date) -> tuple[str, ...]:
    """The books some of whose people are expected to be seen only after ``on`` (or never)."""
    open_days = {code: sorted(book) for code, book in result.books.items()}
    late = {m.organisation for m in members if m.id in set(result.waiting)}
    for inv in result.invitations:
        placed = _place(open_days, inv, profiles[inv.path])
        if placed is None or max(day for day, _share in placed) > on:
            late.add(inv.organisation)
    return tuple(sorted(late)) or tuple(sorted({m.organisation for m in members}))


def _search_extra(meets) -> int | None:
    """The least k in 1..MAX_EXTRA_PER_WEEK with meets(k) (monotonic), or None."""
    high = 1
    while not meets(high):
        if high >= MAX_EXTRA_PER_WEEK:
            return None
        high = min(high * 2, MAX_EXTRA_PER_WEEK)
    low = high // 2 + 1 if high > 1 else 1
    while low < high:
        mid = (low + high) // 2
        if meets(mid):
            high = mid
        else:
            low = mid + 1
    return high


@dataclass(frozen=True)
class Week:
    monday: dt.date
    invited: dict[str, int]  # segment -> people invited that week
    total: int
    cumulative: int  # invited since the campaign began (past included)
    seen: Fraction  # expected to be seen by the week's end (Sunday)


def weeks(projection: Projection) -> list[Week]:
    """The plan week by week, from the week of its start to the week of its last invitation."""
    planned = projection.plan.invitations
    if not planned:
        return []
    cumulative = len(projection.past)
    out = []
    monday = planned[0].day - dt.timedelta(days=planned[0].day.weekday())
    by_week: dict[dt.date, list[Invitation]] = {}
    for inv in planned:
        by_week.setdefault(inv.day - dt.timedelta(days=inv.day.weekday()), []).append(inv)
    last = max(by_week)
    while monday <= last:
        invs = by_week.get(monday, [])
        counts: dict[str, int] = {}
        for inv in invs:
            counts[inv.segment] = counts.get(inv.segment, 0) + 1
        cumulative += len(invs)
        out.append(Week(monday, counts, len(invs), cumulative,
                        seen_by(projection.curve, monday + dt.timedelta(days=6))))
        monday += dt.timedelta(days=7)
    return out


__all__ = ["AppointmentType", "Segment", "FluxReserve", "CampaignConfig", "parse_targets", "BookDay", "Books",
           "build_books", "open_day_on_or_after", "flux_needs", "silent_convocation", "weekly_reserve", "day_reserve", "slot_weekdays", "Load", "load_profile", "max_lag", "Member",
           "Invitation", "Plan", "plan", "seen_curve", "seen_by", "reached_on", "TargetCheck", "Projection",
           "project", "Week", "weeks", "MAX_EXTRA_PER_WEEK"]
