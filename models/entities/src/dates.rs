//! Dates and date ranges, resolved against the context's reference date:
//! "today", "5 weeks ago", "last week Monday", "May 25", "the 29th",
//! "2022-03-08", "last month", "between 1 and 15 March", "this year",
//! "the past 30 days", "since the 1st".
//!
//! A date without a year (or a bare weekday) means the most recent one on
//! or before the reference date, or with `prefer_future` the next one on or
//! after it. Periods ("last month", "this year") are whole calendar periods,
//! weeks run Monday to Sunday, and rolling periods ("the past 30 days") end
//! on the reference date.

use super::calendar::Date;
use super::numbers::parse_number_words;
use super::tokens::{Kind, Tok};
use super::{Candidate, Context, DateRange, EntityKind, EntityValue, Source};

/// How a date written without its year or week may be moved to make a range
/// run forwards ("from Friday to Monday").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Roll {
    Fixed,
    Week,
    Year,
}

struct Found {
    date: Date,
    next: usize,
    roll: Roll,
}

pub(crate) fn extract(toks: &[Tok<'_>], ctx: &Context, out: &mut Vec<Candidate>) {
    for i in 0..toks.len() {
        if let Some(f) = date_at(toks, i, ctx) {
            out.push(Candidate {
                kind: EntityKind::Date,
                start: toks[i].start,
                end: toks[f.next - 1].end,
                value: EntityValue::Date(f.date),
                source: Source::Rules,
                confidence: 0.95,
            });
        }
        if let Some((range, next)) = range_at(toks, i, ctx) {
            out.push(Candidate {
                kind: EntityKind::DateRange,
                start: toks[i].start,
                end: toks[next - 1].end,
                value: EntityValue::DateRange(range),
                source: Source::Rules,
                confidence: 0.93,
            });
        }
    }
}

fn word<'a>(toks: &'a [Tok<'_>], j: usize) -> Option<&'a str> {
    toks.get(j)
        .filter(|t| t.kind == Kind::Word)
        .map(|t| t.lower.as_str())
}

fn is_word(toks: &[Tok<'_>], j: usize, words: &[&str]) -> bool {
    word(toks, j).is_some_and(|w| words.contains(&w))
}

fn month_name(w: &str) -> Option<u8> {
    Some(match w {
        "january" | "jan" => 1,
        "february" | "feb" => 2,
        "march" | "mar" => 3,
        "april" | "apr" => 4,
        "may" => 5,
        "june" | "jun" => 6,
        "july" | "jul" => 7,
        "august" | "aug" => 8,
        "september" | "sep" | "sept" => 9,
        "october" | "oct" => 10,
        "november" | "nov" => 11,
        "december" | "dec" => 12,
        _ => return None,
    })
}

/// A month name at `j`, skipping a glued "." after an abbreviation.
fn month_at(toks: &[Tok<'_>], j: usize) -> Option<(u8, usize)> {
    let m = month_name(word(toks, j)?)?;
    let next = if toks.get(j + 1).is_some_and(|t| t.glued && t.sym('.')) && toks[j].text.len() <= 4
    {
        j + 2
    } else {
        j + 1
    };
    Some((m, next))
}

fn weekday_name(w: &str, abbreviations: bool) -> Option<u8> {
    let full = match w {
        "monday" | "mondays" => Some(0),
        "tuesday" | "tuesdays" => Some(1),
        "wednesday" | "wednesdays" => Some(2),
        "thursday" | "thursdays" => Some(3),
        "friday" | "fridays" => Some(4),
        "saturday" | "saturdays" => Some(5),
        "sunday" | "sundays" => Some(6),
        _ => None,
    };
    full.or_else(|| {
        abbreviations.then_some(())?;
        Some(match w {
            "mon" => 0,
            "tue" | "tues" => 1,
            "wed" | "weds" => 2,
            "thu" | "thur" | "thurs" => 3,
            "fri" => 4,
            "sat" => 5,
            "sun" => 6,
            _ => return None,
        })
    })
}

fn ordinal_word(w: &str) -> Option<u8> {
    Some(match w {
        "first" => 1,
        "second" => 2,
        "third" => 3,
        "fourth" => 4,
        "fifth" => 5,
        "sixth" => 6,
        "seventh" => 7,
        "eighth" => 8,
        "ninth" => 9,
        "tenth" => 10,
        "eleventh" => 11,
        "twelfth" => 12,
        "thirteenth" => 13,
        "fourteenth" => 14,
        "fifteenth" => 15,
        "sixteenth" => 16,
        "seventeenth" => 17,
        "eighteenth" => 18,
        "nineteenth" => 19,
        "twentieth" => 20,
        "thirtieth" => 30,
        _ => return None,
    })
}

/// A day of the month at `j`: "25", "25th", "twenty-first", "first".
/// Returns (day, next, written as an ordinal).
fn day_at(toks: &[Tok<'_>], j: usize) -> Option<(u8, usize, bool)> {
    let t = toks.get(j)?;
    match t.kind {
        Kind::Num => {
            if t.text.len() > 2 || !t.text.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let d: u8 = t.text.parse().ok()?;
            if !(1..=31).contains(&d) {
                return None;
            }
            let suffix = toks
                .get(j + 1)
                .is_some_and(|s| s.glued && s.is_any(&["st", "nd", "rd", "th"]));
            Some((d, if suffix { j + 2 } else { j + 1 }, suffix))
        }
        Kind::Word => {
            if let Some(d) = ordinal_word(&t.lower) {
                return Some((d, j + 1, true));
            }
            let tens = match t.lower.as_str() {
                "twenty" => 20,
                "thirty" => 30,
                _ => return None,
            };
            let mut k = j + 1;
            if toks.get(k).is_some_and(|h| h.sym('-') && h.glued) {
                k += 1;
            }
            let unit = ordinal_word(word(toks, k)?).filter(|u| *u <= 9)?;
            let d = tens + unit;
            (d <= 31).then_some((d, k + 1, true))
        }
        Kind::Sym => None,
    }
}

fn year_at(toks: &[Tok<'_>], j: usize) -> Option<(i32, usize)> {
    let t = toks.get(j)?;
    if t.kind != Kind::Num || t.text.len() != 4 || !t.text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i32 = t.text.parse().ok()?;
    (1900..=2100).contains(&y).then_some((y, j + 1))
}

/// An optional ", 2022" or " 2022" after a day and month.
fn opt_year(toks: &[Tok<'_>], j: usize) -> (Option<i32>, usize) {
    if let Some((y, n)) = year_at(toks, j) {
        return (Some(y), n);
    }
    if toks.get(j).is_some_and(|t| t.sym(','))
        && let Some((y, n)) = year_at(toks, j + 1)
    {
        return (Some(y), n);
    }
    (None, j)
}

/// A small count: "5", "five", "a", "a couple of".
fn count_at(toks: &[Tok<'_>], j: usize) -> Option<(i64, usize)> {
    let t = toks.get(j)?;
    match t.kind {
        Kind::Num => {
            if t.text.len() > 3 || !t.text.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((t.text.parse().ok()?, j + 1))
        }
        Kind::Word => {
            if t.is_any(&["a", "an", "one"]) && !is_word(toks, j + 1, &["couple"]) {
                return Some((1, j + 1));
            }
            let k = if t.is("a") { j + 1 } else { j };
            if is_word(toks, k, &["couple"]) {
                let n = if is_word(toks, k + 1, &["of"]) {
                    k + 2
                } else {
                    k + 1
                };
                return Some((2, n));
            }
            let (n, used) = parse_number_words(toks, j)?;
            (n <= 999).then_some((i64::try_from(n).ok()?, j + used))
        }
        Kind::Sym => None,
    }
}

#[derive(Clone, Copy)]
enum Unit {
    Day,
    Week,
    Fortnight,
    Month,
    Year,
}

fn unit_at(toks: &[Tok<'_>], j: usize) -> Option<Unit> {
    Some(match word(toks, j)? {
        "day" | "days" => Unit::Day,
        "week" | "weeks" | "wk" | "wks" => Unit::Week,
        "fortnight" | "fortnights" => Unit::Fortnight,
        "month" | "months" => Unit::Month,
        "year" | "years" | "yr" | "yrs" => Unit::Year,
        _ => return None,
    })
}

fn shift(date: Date, unit: Unit, n: i64) -> Option<Date> {
    match unit {
        Unit::Day => date.add_days(n),
        Unit::Week => date.add_days(n.checked_mul(7)?),
        Unit::Fortnight => date.add_days(n.checked_mul(14)?),
        Unit::Month => date.add_months(i32::try_from(n).ok()?),
        Unit::Year => date.add_months(i32::try_from(n.checked_mul(12)?).ok()?),
    }
}

/// The month and day in the year that makes it the preferred side of the
/// reference date.
fn resolve_month_day(ctx: &Context, month: u8, day: u8, year: Option<i32>) -> Option<(Date, Roll)> {
    if let Some(y) = year {
        return Some((Date::new(y, month, day)?, Roll::Fixed));
    }
    let r = ctx.reference_date;
    // Feb 29 may be up to 8 years away.
    for k in 0..=8 {
        let y = if ctx.prefer_future {
            r.year() + k
        } else {
            r.year() - k
        };
        if let Some(d) = Date::new(y, month, day)
            && ((ctx.prefer_future && d >= r) || (!ctx.prefer_future && d <= r))
        {
            return Some((d, Roll::Year));
        }
    }
    None
}

/// "the 29th": that day in the nearest month where it exists, on the
/// preferred side of the reference date.
fn resolve_day_of_month(ctx: &Context, day: u8) -> Option<Date> {
    let r = ctx.reference_date;
    for k in 0..=12 {
        let m = r
            .month_start()
            .add_months(if ctx.prefer_future { k } else { -k })?;
        if let Some(d) = Date::new(m.year(), m.month(), day)
            && ((ctx.prefer_future && d >= r) || (!ctx.prefer_future && d <= r))
        {
            return Some(d);
        }
    }
    None
}

fn weekday_on_or(ctx: &Context, wd: u8, future: bool, strict: bool) -> Option<Date> {
    let r = ctx.reference_date;
    let rw = i64::from(r.weekday());
    let w = i64::from(wd);
    let mut delta = if future {
        (w - rw).rem_euclid(7)
    } else {
        -(rw - w).rem_euclid(7)
    };
    if strict && delta == 0 {
        delta = if future { 7 } else { -7 };
    }
    r.add_days(delta)
}

/// One date starting at token `i`, the longest that matches.
fn date_at(toks: &[Tok<'_>], i: usize, ctx: &Context) -> Option<Found> {
    let r = ctx.reference_date;
    let fixed = |date: Option<Date>, next: usize| {
        date.map(|date| Found {
            date,
            next,
            roll: Roll::Fixed,
        })
    };
    let w = word(toks, i);
    // Relative days.
    match w {
        Some("today" | "tonight") => return fixed(Some(r), i + 1),
        Some("yesterday") => return fixed(r.add_days(-1), i + 1),
        Some("tomorrow" | "tmrw" | "tmr") => return fixed(r.add_days(1), i + 1),
        _ => {}
    }
    // Parts of a day: "last night", "this morning".
    if w == Some("last") && is_word(toks, i + 1, &["night"]) {
        return fixed(r.add_days(-1), i + 2);
    }
    if w == Some("this") && is_word(toks, i + 1, &["morning", "afternoon", "evening"]) {
        return fixed(Some(r), i + 2);
    }
    let k = if w == Some("the") { i + 1 } else { i };
    if is_word(toks, k, &["day"]) && is_word(toks, k + 1, &["before", "after"]) {
        let dir = if is_word(toks, k + 1, &["before"]) {
            -1
        } else {
            1
        };
        if is_word(toks, k + 2, &["yesterday"]) && dir < 0 {
            return fixed(r.add_days(-2), k + 3);
        }
        if is_word(toks, k + 2, &["tomorrow"]) && dir > 0 {
            return fixed(r.add_days(2), k + 3);
        }
    }
    // "5 weeks ago", "a month ago", "three days back", "in 2 weeks".
    if let Some((n, j)) = count_at(toks, i)
        && let Some(unit) = unit_at(toks, j)
    {
        if is_word(toks, j + 1, &["ago", "back", "earlier", "before"])
            && !is_word(toks, j + 2, &["that", "the"])
        {
            return fixed(shift(r, unit, -n), j + 2);
        }
        if is_word(toks, j + 1, &["from"]) && is_word(toks, j + 2, &["now", "today"]) {
            return fixed(shift(r, unit, n), j + 3);
        }
    }
    if w == Some("in")
        && let Some((n, j)) = count_at(toks, i + 1)
        && let Some(unit) = unit_at(toks, j)
        && (!toks[i + 1].is_any(&["a", "an"]) || !matches!(unit, Unit::Month | Unit::Year))
    {
        return fixed(shift(r, unit, n), j + 1);
    }
    // Weekdays: "last Monday", "next Friday", "this Wednesday", "Monday",
    // "last week Monday", "Monday last week", "Friday of next week".
    if let Some(f) = weekday_date(toks, i, ctx) {
        return Some(f);
    }
    // Start or end of a month: "end of last month", "the start of next month".
    if is_word(toks, k, &["end", "start", "beginning"]) && is_word(toks, k + 1, &["of"]) {
        let j = if is_word(toks, k + 2, &["the"]) {
            k + 3
        } else {
            k + 2
        };
        if let Some((month_first, next)) = month_ref(toks, j, ctx) {
            let d = if is_word(toks, k, &["end"]) {
                month_first.month_end()
            } else {
                month_first
            };
            return fixed(Some(d), next);
        }
    }
    // Numeric dates.
    if let Some(f) = numeric_date(toks, i, ctx) {
        return Some(f);
    }
    // "May 25", "May 25th, 2022", "May the 25th".
    if let Some((month, j)) = month_at(toks, i) {
        let j2 = if is_word(toks, j, &["the"]) { j + 1 } else { j };
        if let Some((day, next, _)) = day_at(toks, j2) {
            // Not "May 2022" read as a day, not "may 5 people".
            let (year, next) = opt_year(toks, next);
            if !(toks[i].is("may") && is_word(toks, next, &["people", "of", "times", "days"])) {
                let (date, roll) = resolve_month_day(ctx, month, day, year)?;
                return Some(Found { date, next, roll });
            }
        }
    }
    // "25 May", "25th of May 2022", "the 25th of May", "the 29th",
    // "the 1st of next month", "on the 15th".
    let j = k;
    if let Some((day, next, ordinal)) = day_at(toks, j) {
        let of = is_word(toks, next, &["of"]);
        let m_at = if of { next + 1 } else { next };
        if let Some((month, after)) = month_at(toks, m_at) {
            let (year, after) = opt_year(toks, after);
            let (date, roll) = resolve_month_day(ctx, month, day, year)?;
            return Some(Found {
                date,
                next: after,
                roll,
            });
        }
        if of {
            let j2 = if is_word(toks, m_at, &["the"]) {
                m_at + 1
            } else {
                m_at
            };
            if let Some((first, after)) = month_ref(toks, j2, ctx) {
                return fixed(Date::new(first.year(), first.month(), day), after);
            }
        }
        // A lone day needs "the" or an ordinal suffix, and must not be the
        // start of "the 5 days" or a count.
        // "the second one" is not a date: an ordinal word alone is a day
        // only after "on", "since", "by"… ("on the second").
        let word_day_ok = toks[j].kind != Kind::Word
            || (i > 0
                && is_word(
                    toks,
                    i - 1,
                    &[
                        "on", "since", "by", "until", "till", "from", "before", "after",
                    ],
                ));
        let lone = ((k > i && ordinal)
            || (k > i && toks[j].kind == Kind::Num && unit_at(toks, next).is_none())
            || (ordinal && toks[j].kind == Kind::Num))
            && word_day_ok
            && !is_word(toks, next, &["one", "ones"]);
        let glued_sep = toks.get(next).is_some_and(|t| {
            t.glued && t.kind == Kind::Sym && !t.sym(',') && !t.sym('?') && !t.sym('!')
        });
        if lone
            && !glued_sep
            && unit_at(toks, next).is_none()
            && !is_word(
                toks,
                next,
                &[
                    "transaction",
                    "transactions",
                    "payment",
                    "payments",
                    "time",
                    "times",
                ],
            )
        {
            return fixed(resolve_day_of_month(ctx, day), next);
        }
    }
    None
}

/// "last month", "this month", "next month" → the first of that month.
fn month_ref(toks: &[Tok<'_>], j: usize, ctx: &Context) -> Option<(Date, usize)> {
    let first = ctx.reference_date.month_start();
    let n = match word(toks, j)? {
        "last" | "previous" => -1,
        "this" | "the" => 0,
        "next" | "coming" => 1,
        _ => return None,
    };
    is_word(toks, j + 1, &["month"]).then_some(())?;
    Some((first.add_months(n)?, j + 2))
}

fn weekday_date(toks: &[Tok<'_>], i: usize, ctx: &Context) -> Option<Found> {
    let r = ctx.reference_date;
    let week_offset = |w: &str| match w {
        "last" | "previous" => Some(-1),
        "this" => Some(0),
        "next" => Some(1),
        _ => None,
    };
    let fixed = |date: Option<Date>, next: usize| {
        date.map(|date| Found {
            date,
            next,
            roll: Roll::Fixed,
        })
    };
    let w = word(toks, i)?;
    // "last week Monday", "next week's Friday"
    if let Some(off) = week_offset(w) {
        if is_word(toks, i + 1, &["week"]) {
            let mut j = i + 2;
            if toks.get(j).is_some_and(|t| t.sym('\'') || t.sym('’'))
                && is_word(toks, j + 1, &["s"])
            {
                j += 2;
            }
            if let Some(wd) = word(toks, j).and_then(|w| weekday_name(w, true)) {
                let start = r.week_start()?.add_days(7 * off)?;
                return fixed(start.add_days(i64::from(wd)), j + 1);
            }
            return None;
        }
        // "last Monday", "next Friday", "this Wednesday", "this coming Friday"
        let mut j = i + 1;
        if is_word(toks, j, &["coming"]) {
            j += 1;
        }
        let wd = weekday_name(word(toks, j)?, true)?;
        let date = match off {
            -1 => weekday_on_or(ctx, wd, false, true),
            1 => weekday_on_or(ctx, wd, true, true),
            _ if j > i + 1 => weekday_on_or(ctx, wd, true, false),
            _ => r.week_start()?.add_days(i64::from(wd)),
        };
        return fixed(date, j + 1);
    }
    let abbreviations = i > 0
        && is_word(
            toks,
            i - 1,
            &["on", "since", "from", "until", "till", "to", "and", "by"],
        );
    let wd = weekday_name(w, abbreviations)?;
    // "Monday last week", "Friday of next week"
    let mut j = i + 1;
    if is_word(toks, j, &["of"]) {
        j += 1;
    }
    if let Some(off) = word(toks, j).and_then(week_offset)
        && is_word(toks, j + 1, &["week"])
    {
        let start = r.week_start()?.add_days(7 * off)?;
        return fixed(start.add_days(i64::from(wd)), j + 2);
    }
    // A weekday with a month day after it ("Monday 3 March"): let the
    // longer match decide, by reading the date after the weekday.
    if let Some(f) = date_at(toks, i + 1, ctx)
        .filter(|_| day_at(toks, i + 1).is_some() || month_at(toks, i + 1).is_some())
    {
        return Some(Found {
            date: f.date,
            next: f.next,
            roll: f.roll,
        });
    }
    let date = weekday_on_or(ctx, wd, ctx.prefer_future, false)?;
    Some(Found {
        date,
        next: i + 1,
        roll: Roll::Week,
    })
}

/// "2022-03-08", "08/03/2022", "8/3/22", "08.03.2022", "25/05".
fn numeric_date(toks: &[Tok<'_>], i: usize, ctx: &Context) -> Option<Found> {
    let t = toks.get(i)?;
    if t.kind != Kind::Num {
        return None;
    }
    // "08.03.2022" arrives as one numeral token.
    if t.text.matches('.').count() == 2 && !t.text.contains(',') {
        let parts: Vec<&str> = t.text.split('.').collect();
        return dmy(ctx, parts[0], parts[1], Some(parts[2])).map(|(date, roll)| Found {
            date,
            next: i + 1,
            roll,
        });
    }
    if !t.text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // "24/7" is a way of saying "always".
    if t.text == "24"
        && toks.get(i + 2).is_some_and(|n| n.text == "7")
        && toks.get(i + 1).is_some_and(|s| s.sym('/'))
    {
        return None;
    }
    let sep = toks
        .get(i + 1)
        .filter(|s| s.glued && (s.sym('-') || s.sym('/') || s.sym('.')))?;
    let sep_char = sep.text;
    let b = toks.get(i + 2).filter(|b| b.glued && b.kind == Kind::Num)?;
    let third = toks
        .get(i + 3)
        .filter(|s| s.glued && s.text == sep_char)
        .and_then(|_| toks.get(i + 4))
        .filter(|c| c.glued && c.kind == Kind::Num);
    if t.text.len() == 4 {
        // ISO: year first.
        let c = third?;
        let y: i32 = t.text.parse().ok()?;
        let m: u8 = b.text.parse().ok()?;
        let d: u8 = c.text.parse().ok()?;
        if b.text.len() > 2 || c.text.len() > 2 {
            return None;
        }
        return Date::new(y, m, d).map(|date| Found {
            date,
            next: i + 5,
            roll: Roll::Fixed,
        });
    }
    if sep_char == "-" && third.is_none() {
        // "1-15" is a range of days, not a date.
        return None;
    }
    let (date, roll) = dmy(ctx, t.text, b.text, third.map(|c| c.text))?;
    Some(Found {
        date,
        next: if third.is_some() { i + 5 } else { i + 3 },
        roll,
    })
}

fn dmy(ctx: &Context, a: &str, b: &str, year: Option<&str>) -> Option<(Date, Roll)> {
    if a.len() > 2 || b.len() > 2 || a.is_empty() || b.is_empty() {
        return None;
    }
    let (a, b): (u8, u8) = (a.parse().ok()?, b.parse().ok()?);
    let (day, month) = if ctx.day_first { (a, b) } else { (b, a) };
    if !(1..=12).contains(&month) {
        return None;
    }
    let year = match year {
        None => None,
        Some(y) if y.len() == 4 => Some(y.parse().ok()?),
        Some(y) if y.len() == 2 => Some(2000 + y.parse::<i32>().ok()?),
        Some(_) => return None,
    };
    resolve_month_day(ctx, month, day, year)
}

/// One date range starting at token `i`.
fn range_at(toks: &[Tok<'_>], i: usize, ctx: &Context) -> Option<(DateRange, usize)> {
    let r = ctx.reference_date;
    // "between X and Y", "from X to Y", "X to Y", "X - Y"
    if let Some(found) = between(toks, i, ctx) {
        return Some(found);
    }
    let w = word(toks, i)?;
    let range = |from: Option<Date>, to: Option<Date>| match (from, to) {
        (Some(from), Some(to)) if from <= to => Some(DateRange { from, to }),
        _ => None,
    };
    // "since X": from X to the reference date.
    if w == "since" {
        if let Some(f) = date_at(toks, i + 1, ctx) {
            return Some((range(Some(f.date), Some(r))?, f.next));
        }
        if let Some((rg, next)) = period(toks, i + 1, ctx) {
            return Some((range(Some(rg.from), Some(r))?, next));
        }
        if let Some((month, next)) = month_at(toks, i + 1) {
            let (year, next) = opt_year(toks, next);
            let (d, _) = resolve_month_day(
                &Context {
                    prefer_future: false,
                    ..ctx.clone()
                },
                month,
                1,
                year,
            )?;
            return Some((range(Some(d), Some(r))?, next));
        }
        return None;
    }
    // "in March", "during May 2022", "March 2022", "in 2023"
    let prep = ["in", "during", "for", "of", "throughout", "over", "from"];
    if prep.contains(&w) {
        if let Some((y, next)) = year_at(toks, i + 1)
            && !is_word(toks, next, &["pounds", "euros", "dollars", "quid"])
        {
            let from = Date::new(y, 1, 1);
            let to = Date::new(y, 12, 31);
            return Some((range(from, to)?, next));
        }
        let j = if is_word(toks, i + 1, &["early", "late", "mid"]) {
            return None;
        } else {
            i + 1
        };
        if let Some((month, next)) = month_at(toks, j)
            && day_at(toks, next).is_none()
        {
            return month_range(ctx, month, toks, next);
        }
    }
    if let Some((month, next)) = month_at(toks, i)
        && (!toks[i].is("may") || year_at(toks, next).is_some())
        && let Some((y, after)) = year_at(toks, next)
    {
        let first = Date::new(y, month, 1)?;
        return Some((
            DateRange {
                from: first,
                to: first.month_end(),
            },
            after,
        ));
    }
    period(toks, i, ctx)
}

fn month_range(
    ctx: &Context,
    month: u8,
    toks: &[Tok<'_>],
    next: usize,
) -> Option<(DateRange, usize)> {
    let (year, next) = opt_year(toks, next);
    let first = match year {
        Some(y) => Date::new(y, month, 1)?,
        None => {
            // The most recent such month that has begun (or the next one).
            let (d, _) = resolve_month_day(ctx, month, 1, None)?;
            let r = ctx.reference_date;
            if ctx.prefer_future
                && d.month() == month
                && Date::new(r.year(), month, 1).is_some_and(|m| m <= r && m.month_end() >= r)
            {
                Date::new(r.year(), month, 1)?
            } else {
                d
            }
        }
    };
    Some((
        DateRange {
            from: first,
            to: first.month_end(),
        },
        next,
    ))
}

/// "last week", "this month", "next year", "the past 30 days",
/// "last fortnight", "the weekend", "last quarter".
fn period(toks: &[Tok<'_>], i: usize, ctx: &Context) -> Option<(DateRange, usize)> {
    let r = ctx.reference_date;
    let mut j = i;
    if is_word(toks, j, &["the"]) {
        j += 1;
    }
    // "the week before last", "the month before last"
    if j > i && is_word(toks, j + 1, &["before"]) && is_word(toks, j + 2, &["last"]) {
        match word(toks, j)? {
            "week" => {
                let start = r.week_start()?.add_days(-14)?;
                return Some((
                    DateRange {
                        from: start,
                        to: start.add_days(6)?,
                    },
                    j + 3,
                ));
            }
            "month" => {
                let first = r.month_start().add_months(-2)?;
                return Some((
                    DateRange {
                        from: first,
                        to: first.month_end(),
                    },
                    j + 3,
                ));
            }
            "year" => {
                let y = r.year() - 2;
                return Some((
                    DateRange {
                        from: Date::new(y, 1, 1)?,
                        to: Date::new(y, 12, 31)?,
                    },
                    j + 3,
                ));
            }
            _ => {}
        }
    }
    let which = word(toks, j)?;
    let offset: i64 = match which {
        "last" | "previous" | "past" | "prior" => -1,
        "this" | "current" => 0,
        "next" | "coming" => 1,
        _ => {
            // "the weekend", "over the weekend"
            if j > i && is_word(toks, j, &["weekend"]) {
                let sat = weekday_on_or(ctx, 5, ctx.prefer_future, false)?;
                return Some((
                    DateRange {
                        from: sat,
                        to: sat.add_days(1)?,
                    },
                    j + 1,
                ));
            }
            return None;
        }
    };
    let rolling_word = which == "past";
    let k = j + 1;
    // "the last 30 days", "past two weeks", "next 3 months", "last couple of weeks"
    if let Some((n, after)) = count_at(toks, k).filter(|_| !is_word(toks, k, &["a", "an", "one"])) {
        if let Some(unit) = unit_at(toks, after) {
            if n == 0 {
                return None;
            }
            let (from, to) = if offset > 0 {
                (Some(r), shift(r, unit, n))
            } else {
                (shift(r, unit, -n), Some(r))
            };
            return Some((
                DateRange {
                    from: from?,
                    to: to?,
                },
                after + 1,
            ));
        }
        return None;
    }
    let (from, to) = match word(toks, k)? {
        "week" if rolling_word => (r.add_days(-7)?, r),
        "month" if rolling_word => (r.add_months(-1)?, r),
        "year" if rolling_word => (r.add_months(-12)?, r),
        "fortnight" => {
            if offset > 0 {
                (r, r.add_days(14)?)
            } else {
                (r.add_days(-14)?, r)
            }
        }
        "week" => {
            let start = r.week_start()?.add_days(7 * offset)?;
            (start, start.add_days(6)?)
        }
        "weekend" => {
            let sat = r.week_start()?.add_days(5 + 7 * offset)?;
            // Weeks run Monday to Sunday: "this weekend" ends this week,
            // "last weekend" is the one before it, even when said on a Sunday.
            (sat, sat.add_days(1)?)
        }
        "month" => {
            let first = r.month_start().add_months(i32::try_from(offset).ok()?)?;
            (first, first.month_end())
        }
        "quarter" => {
            let q0 = (i32::from(r.month()) - 1) / 3 * 3;
            let first = Date::new(r.year(), u8::try_from(q0 + 1).ok()?, 1)?
                .add_months(3 * i32::try_from(offset).ok()?)?;
            (first, first.add_months(2)?.month_end())
        }
        "year" => {
            let y = r.year() + i32::try_from(offset).ok()?;
            (Date::new(y, 1, 1)?, Date::new(y, 12, 31)?)
        }
        _ => return None,
    };
    // "last week Monday" is a date, read by `date_at`; the longer match wins.
    Some((DateRange { from, to }, k + 1))
}

/// A range's first end: a full date, or a bare day (day, next token).
type FirstEnd = (Option<Found>, Option<(u8, usize)>);

/// A range whose year was guessed from its end ("1 to 15 March" said on
/// 13 March) is the one that contains the reference date when there is one.
fn include_reference(ctx: &Context, from: Date, to: Date, roll: Roll) -> (Date, Date) {
    let r = ctx.reference_date;
    if roll != Roll::Year || ctx.prefer_future {
        return (from, to);
    }
    match (from.add_months(12), to.add_months(12)) {
        (Some(f), Some(t)) if f <= r && t >= r => (f, t),
        _ => (from, to),
    }
}

/// "between 1 and 15 March", "from May 3 to May 10", "1-15 March",
/// "from Monday to Friday", "March 1 to 15".
fn between(toks: &[Tok<'_>], i: usize, ctx: &Context) -> Option<(DateRange, usize)> {
    let (start, joiners): (usize, &[&str]) = match word(toks, i) {
        Some("between") => (i + 1, &["and", "to", "-", "&"]),
        Some("from") => (i + 1, &["to", "until", "till", "through", "thru", "-"]),
        _ => (i, &["to", "until", "till", "through", "-"]),
    };
    // Whole months: "from January to March", "Jan-Mar 2023".
    if let Some((m1, n1)) = month_at(toks, start) {
        let (y1, n1) = opt_year(toks, n1);
        let joined = toks
            .get(n1)
            .is_some_and(|t| t.is_any(joiners) || (joiners.contains(&"-") && t.sym('-')));
        if joined
            && day_at(toks, n1 + 1).is_none()
            && let Some((m2, n2)) = month_at(toks, n1 + 1)
        {
            let (y2, n2) = opt_year(toks, n2);
            if day_at(toks, n2).is_none() && !(toks[start].is("may") && start == i) {
                let first = match (y1, y2) {
                    (Some(y), _) => Date::new(y, m1, 1)?,
                    (None, Some(y)) => Date::new(if m1 <= m2 { y } else { y - 1 }, m1, 1)?,
                    (None, None) => {
                        resolve_month_day(
                            &Context {
                                prefer_future: ctx.prefer_future,
                                ..ctx.clone()
                            },
                            m1,
                            1,
                            None,
                        )?
                        .0
                    }
                };
                let mut last = Date::new(y2.unwrap_or(first.year()), m2, 1)?;
                if last < first {
                    last = last.add_months(12)?;
                }
                return Some((
                    DateRange {
                        from: first,
                        to: last.month_end(),
                    },
                    n2,
                ));
            }
        }
    }
    // The first end: a full date, or a bare day that borrows the month of
    // the second end.
    let first = date_at(toks, start, ctx);
    let bare_first =
        if toks.get(start).is_some_and(|t| t.kind == Kind::Num) || is_word(toks, start, &["the"]) {
            let k = if is_word(toks, start, &["the"]) {
                start + 1
            } else {
                start
            };
            day_at(toks, k).map(|(d, n, _)| (d, n))
        } else {
            None
        };
    let mut candidates: Vec<FirstEnd> = vec![];
    if first.is_some() {
        candidates.push((first, None));
    }
    if bare_first.is_some() {
        candidates.push((None, bare_first));
    }
    for (full, bare) in candidates {
        let after_first = full.as_ref().map(|f| f.next).or(bare.map(|b| b.1))?;
        let joiner = toks.get(after_first)?;
        let ok = joiner.is_any(joiners) || (joiners.contains(&"-") && joiner.sym('-'));
        if !ok {
            continue;
        }
        let second_at = after_first + 1;
        let second = date_at(toks, second_at, ctx);
        match (&full, bare, second) {
            (Some(a), _, Some(b)) => {
                let mut to = b.date;
                if to < a.date {
                    to = match b.roll {
                        Roll::Week => to.add_days(7)?,
                        Roll::Year => to.add_months(12)?,
                        Roll::Fixed => continue,
                    };
                }
                let mut from = a.date;
                // A pair that ended up in the future under a past preference
                // ("from Monday to Friday" said on a Wednesday) moves back a week.
                if !ctx.prefer_future
                    && to > ctx.reference_date
                    && a.roll == Roll::Week
                    && b.roll == Roll::Week
                {
                    from = from.add_days(-7)?;
                    to = to.add_days(-7)?;
                }
                if from <= to {
                    let (from, to) = if a.roll == Roll::Year && b.roll == Roll::Year {
                        include_reference(ctx, from, to, Roll::Year)
                    } else {
                        (from, to)
                    };
                    return Some((DateRange { from, to }, b.next));
                }
            }
            (None, Some((day, _)), Some(b)) => {
                let from = Date::new(b.date.year(), b.date.month(), day)?;
                if from <= b.date {
                    let (from, to) = include_reference(ctx, from, b.date, b.roll);
                    return Some((DateRange { from, to }, b.next));
                }
            }
            (Some(a), _, None) => {
                // "March 1 to 15": the second end is a bare day in the first's month.
                let k = if is_word(toks, second_at, &["the"]) {
                    second_at + 1
                } else {
                    second_at
                };
                if let Some((day, next, _)) = day_at(toks, k) {
                    let to = Date::new(a.date.year(), a.date.month(), day)?;
                    if a.date <= to && unit_at(toks, next).is_none() {
                        return Some((DateRange { from: a.date, to }, next));
                    }
                }
            }
            _ => {}
        }
    }
    None
}
