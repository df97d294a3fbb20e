//! HTML read as tokens, for URL previews (`preview.rs`: OpenGraph tags and
//! the title) and oEmbed discovery (`oembed.rs`): shared by both so that
//! neither depends on the other.

use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{BufferQueue, TokenSink, Tokenizer, TokenizerOpts};

/// `sink` fed the tokens of `html`.
pub(super) fn tokenized<S: TokenSink>(html: &str, sink: S) -> S {
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let queue = BufferQueue::default();
    queue.push_back(html.into());
    let _ = tokenizer.feed(&queue);
    tokenizer.end();
    tokenizer.sink
}

/// How the tokenizer must read what follows the start tag `name`, for the
/// tags whose content is not markup (a script's `<meta>` is no tag).
pub(super) fn raw_kind(name: &str) -> Option<RawKind> {
    match name {
        "title" | "textarea" => Some(RawKind::Rcdata),
        "script" => Some(RawKind::ScriptData),
        "style" | "noscript" | "iframe" | "xmp" => Some(RawKind::Rawtext),
        _ => None,
    }
}
