//! The words the user directory finds a user by (Synapse's matching): every
//! word of a search term must begin a word of the user's localpart or of
//! their display name, whatever the case.

use std::collections::BTreeSet;

/// At most this many words of a search term are matched; the rest are left
/// out (a longer term finds a superset, never an error).
pub const MAX_TERM_WORDS: usize = 16;

/// The lowercased words of `text`: its runs of letters and digits.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The words `user_id` is found by: those of its localpart and of
/// `displayname`, each once.
pub fn user_words(user_id: &str, displayname: Option<&str>) -> BTreeSet<String> {
    let localpart = user_id
        .strip_prefix('@')
        .and_then(|u| u.split_once(':'))
        .map_or(user_id, |(l, _)| l);
    let mut out: BTreeSet<String> = words(localpart).into_iter().collect();
    out.extend(words(displayname.unwrap_or_default()));
    out
}

/// The words of a search term, longest first (the most selective leads
/// the lookup), each once, at most [`MAX_TERM_WORDS`].
pub fn term_words(term: &str) -> Vec<String> {
    let mut out: Vec<String> = words(term);
    out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    out.dedup();
    out.truncate(MAX_TERM_WORDS);
    out
}

/// The least text above every text that begins with `prefix` (in byte
/// order): `prefix` matches the words in `[prefix, upper_bound(prefix))`.
pub fn upper_bound(prefix: &str) -> String {
    format!("{prefix}{}", char::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_found_by_the_words_of_localpart_and_display_name() {
        let found = user_words("@alice_b.2:example.org", Some("Dr. Élise-Marie Ünal"));
        let expected = ["2", "alice", "b", "dr", "marie", "élise", "ünal"];
        assert_eq!(found.into_iter().collect::<Vec<_>>(), expected);
        assert_eq!(user_words("@bob:x", None).len(), 1);
    }

    #[test]
    fn term_words_lead_with_the_longest() {
        assert_eq!(term_words("Bo  BUILDER bo"), ["builder", "bo"]);
        assert!(term_words("@:. -").is_empty());
        assert_eq!(term_words(&"a ".repeat(100)).len(), 1);
        let many: String = (0..40).map(|i| format!("w{i} ")).collect();
        assert_eq!(term_words(&many).len(), MAX_TERM_WORDS);
    }

    #[test]
    fn the_upper_bound_is_above_every_word_with_the_prefix() {
        let top = upper_bound("bo");
        for word in ["bo", "bob", "bo\u{ffff}z", "bo9"] {
            assert!(word >= "bo" && word < top.as_str(), "{word}");
        }
        assert!("bp" > top.as_str());
    }
}
