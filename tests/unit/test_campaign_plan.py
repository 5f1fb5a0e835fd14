"""The stock campaign's planner (worker/domain/campaign.py, issue 14): pure arithmetic, property-tested.

Whatever the books, the people waiting and the invitations already made: no day of a book is ever
filled beyond what the campaign may take of it; each book serves its people in priority order; and
planning one day at a time (what the scheduler's job does) gives exactly the projection planned at once.
"""
from __future__ import annotations

import datetime as dt
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.adapters.config_files import load_config
from worker.domain import campaign as cp
from worker.domain.calendar import BusinessCalendar
from worker.domain.policy import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CAL = BusinessCalendar()
START = dt.date(2024, 4, 1)  # a Monday (Easter Monday 2024 is a holiday: the planner skips it)
PROFILES = {
    "ft": (cp.Load(8, Fraction(1)),),
    "cd": (cp.Load(15, Fraction(1, 2)), cp.Load(38, Fraction(1, 2))),
    "ml": (cp.Load(15, Fraction(2, 3)), cp.Load(38, Fraction(1, 3))),
}
ORGS = ("A", "B", "C")


# --------------------------------------------------------------------------- strategies


@st.composite
def books(draw):
    out = {}
    for code in ORGS:
        book = {}
        for offset in range(120):
            day = START + dt.timedelta(days=offset)
            if not CAL.is_working_day(day) or not draw(st.booleans()):
                continue
            units = draw(st.integers(1, 8))
            book[day] = cp.BookDay(units, draw(st.integers(0, units)))
        out[code] = book
    return out


@st.composite
def members(draw):
    n = draw(st.integers(0, 40))
    out = []
    for i in range(n):
        later = draw(st.one_of(st.none(), st.integers(0, 40)))
        out.append(cp.Member(
            id=i + 1, organisation=draw(st.sampled_from(ORGS)), segment=draw(st.sampled_from(("s1", "s2", "s3"))),
            priority=draw(st.integers(1, 4)), path=draw(st.sampled_from(tuple(PROFILES))),
            droit_opened_on=dt.date(2015, 1, 1) + dt.timedelta(days=draw(st.integers(0, 3000))),
            available_on=None if later is None else START + dt.timedelta(days=later)))
    return out


@st.composite
def past(draw):
    out = []
    for i in range(draw(st.integers(0, 10))):
        day = START - dt.timedelta(days=draw(st.integers(1, 30)))
        out.append(cp.Invitation(day, 1000 + i, draw(st.sampled_from(ORGS)), draw(st.sampled_from(tuple(PROFILES)))))
    return out


def _landing(bk, code, day):
    open_days = sorted(bk[code])
    return next((d for d in open_days if d >= day), None)


def _loads(bk, invitations):
    """(organisation, day) -> places, recomputed independently of the planner."""
    out = {}
    for inv in invitations:
        for load in PROFILES[inv.path]:
            day = _landing(bk, inv.organisation, inv.day + dt.timedelta(days=load.days))
            if day is not None:
                out[(inv.organisation, day)] = out.get((inv.organisation, day), Fraction(0)) + load.share
    return out


END = START + dt.timedelta(days=60)
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- properties


@FAST
@given(books(), members(), past())
def test_no_day_is_filled_beyond_the_campaigns_share(bk, people, before):
    plan = cp.plan(people, start=START, end=END, books=bk, profiles=PROFILES, cal=CAL, past=before)
    planned = _loads(bk, plan.invitations)
    total = _loads(bk, list(before) + plan.invitations)
    for (code, day), share in planned.items():
        assert total[(code, day)] <= bk[code][day].free, (code, day, total[(code, day)], bk[code][day])
    # the planner's own ledger says the same
    for (code, day), share in total.items():
        assert plan.used[code][day] == share
    # and every invitation is on a working day, in the plan's range, of a person waiting and available
    by_id = {m.id: m for m in people}
    assert len({inv.member for inv in plan.invitations}) == len(plan.invitations)
    for inv in plan.invitations:
        assert START <= inv.day <= END and CAL.is_working_day(inv.day)
        m = by_id[inv.member]
        assert inv.organisation == m.organisation and (m.available_on is None or m.available_on <= inv.day)
    assert sorted(plan.waiting) == sorted(set(by_id) - {inv.member for inv in plan.invitations})


@FAST
@given(books(), members(), past())
def test_each_book_serves_its_people_in_priority_order(bk, people, before):
    plan = cp.plan(people, start=START, end=END, books=bk, profiles=PROFILES, cal=CAL, past=before)
    order = {inv.member: i for i, inv in enumerate(plan.invitations)}
    invited_on = {inv.member: inv.day for inv in plan.invitations}
    for inv in plan.invitations:
        m = next(p for p in people if p.id == inv.member)
        for other in people:
            if other.organisation != m.organisation or other.rank >= m.rank:
                continue
            if other.available_on is not None and other.available_on > inv.day:
                continue  # not in line yet that day
            # a person ahead in line, available: invited first (earlier, or before in the same day)
            assert other.id in order and order[other.id] < order[inv.member], (other, m, invited_on)


@FAST
@given(books(), members(), past())
def test_planning_one_day_at_a_time_gives_the_projection(bk, people, before):
    """The scheduler's job plans today only, with what was invited before: the same invitations, the
    same days, as the projection made at the start."""
    whole = cp.plan(people, start=START, end=END, books=bk, profiles=PROFILES, cal=CAL, past=before)
    done, waiting = list(before), list(people)
    day = START
    while day <= END:
        today = cp.plan(waiting, start=day, end=day, books=bk, profiles=PROFILES, cal=CAL, past=done)
        done += today.invitations
        invited = {inv.member for inv in today.invitations}
        waiting = [m for m in waiting if m.id not in invited]
        day += dt.timedelta(days=1)
    assert done[len(before):] == whole.invitations
    assert cp.seen_curve(done, bk, PROFILES) == cp.seen_curve(list(before) + whole.invitations, bk, PROFILES)


@FAST
@given(books(), members())
def test_more_places_never_invite_fewer_people_by_any_day(bk, people):
    """The search for the places a missed target needs relies on it."""
    more = {code: {d: cp.BookDay(b.units + 2, b.reserve) for d, b in book.items()} for code, book in bk.items()}
    a = cp.plan(people, start=START, end=END, books=bk, profiles=PROFILES, cal=CAL)
    b = cp.plan(people, start=START, end=END, books=more, profiles=PROFILES, cal=CAL)
    day = START
    while day <= END:
        assert sum(1 for i in b.invitations if i.day <= day) >= sum(1 for i in a.invitations if i.day <= day)
        day += dt.timedelta(days=1)


# --------------------------------------------------------------------------- the loads, books, targets


def test_load_profiles_follow_the_paths():
    policy = load_config(ROOT / "config").policy
    half = Fraction(1, 2)
    # invited, half book by the end of the first response period; the others are convoked after the
    # relance (15 + 15 days), at least 7 days later, from the next day
    assert cp.load_profile(policy, "cd", half) == (cp.Load(15, half), cp.Load(38, half))
    assert cp.load_profile(policy, "ml", Fraction(3, 4)) == (cp.Load(15, Fraction(3, 4)), cp.Load(38, Fraction(1, 4)))
    # the phone follow-up is an agent's task: no delay counted for it
    assert cp.load_profile(policy, "ft_unregistered", half) == (cp.Load(15, half), cp.Load(38, half))
    # France Travail convokes at once: one place, 7 days later, from the next day
    assert cp.load_profile(policy, "ft", half) == (cp.Load(8, Fraction(1)),)
    assert cp.load_profile(policy, "cd", Fraction(1)) == (cp.Load(15, Fraction(1)),)


def test_books_keep_the_flux_reserve_and_what_the_flux_needs():
    territory = load_config(ROOT / "config").territory
    bk = cp.build_books(territory, CAL, dt.date(2024, 5, 6), dt.date(2024, 5, 12), {"CDAS-REDON": 3},
                        ["CDAS-REDON"], known_flux={"CDAS-REDON": {dt.date(2024, 5, 7): 5}})["CDAS-REDON"]
    # its days are mon, tue, thu: Thursday 9 May 2024 is Ascension Day; 4 times x 2 places
    assert sorted(bk) == [dt.date(2024, 5, 6), dt.date(2024, 5, 7)]
    assert bk[dt.date(2024, 5, 6)] == cp.BookDay(8, 1)  # 3 a week over 3 days
    assert bk[dt.date(2024, 5, 7)] == cp.BookDay(8, 5)  # the flux's known needs, more than the reserve
    extra = cp.build_books(territory, CAL, dt.date(2024, 5, 6), dt.date(2024, 5, 12), {}, ["CDAS-REDON"],
                           extra_per_week={"CDAS-REDON": 4})["CDAS-REDON"]
    assert sum(b.units for b in extra.values()) == 2 * 8 + 4


def test_weekly_reserve():
    assert cp.weekly_reserve(3, 0, 8, 1.5) == 3  # no flux: the floor
    assert cp.weekly_reserve(3, 40, 8, 1.5) == 8  # 5 a week, x 1.5, rounded up


def test_targets_setting():
    assert cp.parse_targets("20%:2023-07-15, 80 %:2023-12-31") == (
        (Fraction(1, 5), dt.date(2023, 7, 15)), (Fraction(4, 5), dt.date(2023, 12, 31)))
    for bad in ("", "20%", "120%:2023-07-15", "20%:2023-13-01", "80%:2023-07-15,20%:2023-12-31"):
        with pytest.raises(ValueError):
            cp.parse_targets(bad)


def _territory():
    return load_config(ROOT / "config").territory


def test_a_missed_target_says_by_how_much_and_the_places_that_would_meet_it():
    """Few places: the target is missed; with the extra places a week the projection says, it is met,
    and with one fewer it is not."""
    territory = _territory()
    people = [cp.Member(id=i, organisation="CDAS-REDON", segment="s", priority=1, path="cd",
                        droit_opened_on=dt.date(2020, 1, 1)) for i in range(300)]
    targets = ((Fraction(1, 2), dt.date(2024, 7, 31)),)

    def project(extra=0, reserve=20):
        return cp.project(people, start=START, end=START + dt.timedelta(days=400), territory=territory, cal=CAL,
                          reserve_per_week={"CDAS-REDON": reserve}, profiles=PROFILES, past=[], targets=targets,
                          population=300, known_flux={})

    missed = project().targets[0]
    assert not missed.met and missed.reachable and missed.extra_per_week and missed.organisations == ("CDAS-REDON",)
    assert missed.needed == 150 and missed.expected < 150

    def seen_with(extra):
        bk = cp.build_books(territory, CAL, START, START + dt.timedelta(days=460), {"CDAS-REDON": 20},
                            ["CDAS-REDON"], {"CDAS-REDON": extra})
        p = cp.plan(people, start=START, end=START + dt.timedelta(days=400), books=bk, profiles=PROFILES, cal=CAL)
        return cp.seen_by(cp.seen_curve(p.invitations, bk, PROFILES), dt.date(2024, 7, 31))

    assert seen_with(missed.extra_per_week) >= 150 > seen_with(missed.extra_per_week - 1)
    # a target before the first appointments can come is out of reach whatever the places
    early = cp.project(people, start=START, end=START + dt.timedelta(days=400), territory=territory, cal=CAL,
                       reserve_per_week={}, profiles=PROFILES, past=[], population=300,
                       targets=((Fraction(1, 10), START + dt.timedelta(days=5)),)).targets[0]
    assert not early.met and not early.reachable and early.extra_per_week is None


def test_weeks_sum_the_plan():
    territory = _territory()
    people = [cp.Member(id=i, organisation=("CDAS-REDON", "FT-REDON")[i % 2], segment=("a", "b")[i % 2],
                        priority=1 + i % 3, path=("cd", "ft")[i % 2], droit_opened_on=dt.date(2019, 1, 1))
              for i in range(200)]
    proj = cp.project(people, start=START, end=START + dt.timedelta(days=300), territory=territory, cal=CAL,
                      reserve_per_week={}, profiles=PROFILES, past=[], population=200,
                      targets=((Fraction(1, 5), dt.date(2024, 5, 15)),))
    weeks = cp.weeks(proj)
    assert sum(w.total for w in weeks) == len(proj.plan.invitations) == 200
    assert weeks[-1].cumulative == 200 and all(w.monday.weekday() == 0 for w in weeks)
    assert sum(sum(w.invited.values()) for w in weeks) == 200


# --------------------------------------------------------------------------- config/campaign.yaml


@pytest.fixture
def cfg_dir(tmp_path):
    target = tmp_path / "config"
    shutil.copytree(ROOT / "config", target)
    return target


def _edit(cfg_dir, change):
    path = cfg_dir / "campaign.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def test_the_shipped_campaign_config_loads_and_matches_the_plan():
    cfg = load_config(ROOT / "config").campaign
    plan = {"non_oriented": (1, "co_diagnostic"), "ft_registered": (1, "milestone"),
            "ml_turning_26": (2, "diagnostic"), "ft_ceased_or_struck_off": (2, "diagnostic"),
            "bimbamjob_to_reorient": (2, "diagnostic"), "cd_contract_to_renew": (3, "contract_renewal"),
            "ml_no_contract": (3, "diagnostic"), "ml_contract_to_renew": (3, "contract_renewal")}
    for key, (priority, appointment) in plan.items():
        seg = cfg.segments[key]
        assert seg.invited and seg.priority == priority and seg.appointment == appointment, key
    assert not cfg.segments["msa"].invited and not cfg.segments["cd_valid_contract"].invited
    assert cfg.segments["cd_valid_contract"].renews_as == "cd_contract_to_renew"
    assert cfg.segments["cd_contract_to_renew"].channels == ("sms|email", "letter")
    assert "premier" not in " ".join(t.name + t.purpose for t in cfg.appointment_types.values()).lower()


def test_no_campaign_file_no_campaign(cfg_dir):
    (cfg_dir / "campaign.yaml").unlink()
    assert load_config(cfg_dir).campaign is None


@pytest.mark.parametrize("change, key, words", [
    (lambda d: d["segments"]["non_oriented"].update(appointment="rdv"), "segments.non_oriented.appointment",
     ["inconnu", "rdv"]),
    (lambda d: d["segments"]["non_oriented"].update(channels=["fax"]), "segments.non_oriented.channels", ["fax"]),
    (lambda d: d["segments"]["non_oriented"].update(path="cdx"), "segments.non_oriented.path", ["cdx"]),
    (lambda d: d["segments"]["non_oriented"].update(priority=0), "segments.non_oriented.priority", ["priorité"]),
    (lambda d: d["segments"]["non_oriented"].update(book="ailleurs"), "segments.non_oriented.book", ["department"]),
    (lambda d: d["segments"]["non_oriented"].pop("appointment"), "segments.non_oriented.appointment",
     ["obligatoire"]),
    (lambda d: d["segments"]["cd_valid_contract"].update(renews_as="msa"), "segments.cd_valid_contract.renews_as",
     ["segment invité"]),
    (lambda d: d["flux_reserve"].update(per_week=-1), "flux_reserve.per_week", ["positif"]),
    (lambda d: d["flux_reserve"].update(organisations={"CDAS-NULLE": 2}), "flux_reserve.organisations.CDAS-NULLE",
     ["inconnue"]),
    (lambda d: d["appointment_types"]["diagnostic"].update(purpose=" "), "appointment_types.diagnostic.purpose",
     ["vide"]),
    (lambda d: d["segments"]["msa"].update(colour="bleu"), "segments.msa.colour", []),
])
def test_a_bad_campaign_file_names_the_file_and_the_key_in_french(cfg_dir, change, key, words):
    _edit(cfg_dir, change)
    with pytest.raises(ConfigError) as exc:
        load_config(cfg_dir)
    assert exc.value.file.endswith("campaign.yaml")
    assert exc.value.key == key, exc.value
    for word in words:
        assert word in exc.value.problem, exc.value
