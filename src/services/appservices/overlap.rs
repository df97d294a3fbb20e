//! Whether two namespace regexes can name the same id: each is compiled to
//! a DFA (anchored at the start, as namespaces match) and the pairs of
//! states both can reach from their starts are walked, byte by byte, until
//! one pair has matched in both (an id both name) or none is left.

use std::collections::{HashSet, VecDeque};

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};

/// Pairs of states walked at most before giving up (a pair of regexes too
/// intricate to decide is not refused).
const MAX_PAIRS: usize = 200_000;

/// Where one regex is, after the bytes read so far.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    /// A prefix of the bytes read so far matched, whatever follows: every
    /// longer id is matched too.
    Matched,
    At(StateID),
}

/// Whether an id exists that both `a` and `b` match from its start (as
/// [`super::Namespace`] matches). `None` when that cannot be decided: a
/// regex the DFA builder refuses (too large, or a Unicode word boundary)
/// or a walk longer than [`MAX_PAIRS`].
pub(super) fn can_overlap(a: &str, b: &str) -> Option<bool> {
    let (da, db) = (dfa(a)?, dfa(b)?);
    let begin = |d: &dense::DFA<Vec<u32>>| {
        d.start_state(&start::Config::new().anchored(Anchored::Yes))
            .ok()
            .map(Side::At)
    };
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([(begin(&da)?, begin(&db)?)]);
    while let Some((x, y)) = queue.pop_front() {
        let (x, y) = match (settle(&da, x), settle(&db, y)) {
            (Settled::Unknown, _) | (_, Settled::Unknown) => return None,
            (Settled::Dead, _) | (_, Settled::Dead) => continue,
            (Settled::Live(x), Settled::Live(y)) => (x, y),
        };
        // Both matched (what was read, or a prefix), or both match if the
        // id ends here (a `$` is satisfied only at the end: not sticky).
        if ends_matched(&da, x) && ends_matched(&db, y) {
            return Some(true);
        }
        if !seen.insert((x, y)) {
            continue;
        }
        if seen.len() > MAX_PAIRS {
            return None;
        }
        for byte in 0..=u8::MAX {
            queue.push_back((step(&da, x, byte), step(&db, y, byte)));
        }
    }
    Some(false)
}

fn dfa(source: &str) -> Option<dense::DFA<Vec<u32>>> {
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .start_kind(StartKind::Anchored)
                .match_kind(MatchKind::All)
                .dfa_size_limit(Some(8 << 20))
                .determinize_size_limit(Some(8 << 20)),
        )
        .build(&format!("^(?:{source})"))
        .ok()
}

/// What a [`Side`] is once looked at.
enum Settled {
    Live(Side),
    /// No continuation can match any more.
    Dead,
    /// The DFA gave up on a byte it cannot decide (a quit byte).
    Unknown,
}

/// `side` as it stands: `Matched` if a prefix of what was read matches
/// whatever follows (the DFA reports a match one byte late, once what
/// follows it was seen).
fn settle(d: &dense::DFA<Vec<u32>>, side: Side) -> Settled {
    let Side::At(s) = side else {
        return Settled::Live(side);
    };
    if d.is_quit_state(s) {
        Settled::Unknown
    } else if d.is_match_state(s) {
        Settled::Live(Side::Matched)
    } else if d.is_dead_state(s) {
        Settled::Dead
    } else {
        Settled::Live(side)
    }
}

/// Whether an id that ends after what was read is matched.
fn ends_matched(d: &dense::DFA<Vec<u32>>, side: Side) -> bool {
    match side {
        Side::Matched => true,
        Side::At(s) => d.is_match_state(d.next_eoi_state(s)),
    }
}

fn step(d: &dense::DFA<Vec<u32>>, side: Side, byte: u8) -> Side {
    match side {
        Side::Matched => Side::Matched,
        Side::At(s) => Side::At(d.next_state(s, byte)),
    }
}

#[cfg(test)]
mod tests {
    use super::can_overlap;

    #[test]
    fn regexes_that_share_an_id_overlap_and_others_do_not() {
        for (a, b) in [
            ("@bridge_.*:example.org", "@bridge_a.*:example.org"),
            ("@bridge_.*", "@bridge_.*"),
            ("@irc_.*", "@.*"),
            ("@[a-z]+_bot:example\\.org", "@telegram_bot:example\\.org"),
            // Matched from the start only: a prefix match is a match.
            ("@bridge", "@bridge_x:example.org"),
            ("#chan_(foo|bar):x", "#chan_ba[rz]:x"),
            ("@é.*", "@\\w+"),
        ] {
            assert_eq!(can_overlap(a, b), Some(true), "{a} / {b}");
            assert_eq!(can_overlap(b, a), Some(true), "{b} / {a}");
        }
        for (a, b) in [
            ("@irc_.*", "@telegram_.*"),
            (
                "@bridge_[0-9]+:example\\.org",
                "@bridge_[a-z]+:example\\.org",
            ),
            ("#chan_(foo|bar):x", "#chan_baz:x"),
            ("@a.*:one\\.org$", "@a.*:two\\.org$"),
        ] {
            assert_eq!(can_overlap(a, b), Some(false), "{a} / {b}");
            assert_eq!(can_overlap(b, a), Some(false), "{b} / {a}");
        }
    }
}
