//! Full-text search over room messages, names and topics (tantivy).
//!
//! Events are indexed as they are stored: an edit (`m.replace`) replaces the
//! text of the event it edits, a redaction removes the event. The index lives
//! in `<data_dir>/search`; if it cannot be opened (lost or corrupt) it is
//! created anew and rebuilt from the events table at start.
//!
//! Each commit carries (as its tantivy payload) the stream position through
//! which every event is in the committed documents, so that the documents
//! and the position are durable together. At start, before the server
//! serves, [`catch_up`] indexes what was stored after that position (a
//! crash loses up to one commit interval of indexing); an index whose last
//! commit was made during a rebuild, or that has no position, is rebuilt.

mod content;
mod room_events;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use parking_lot::{MappedMutexGuard, Mutex, MutexGuard};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value as _,
};
use tantivy::tokenizer::TokenStream;
use tantivy::{Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term, doc};

use serde_json::value::RawValue;

use self::content::Content;
pub use self::room_events::{
    Groups, MemberProfile, ResultContext, RoomEvents, SearchResult, room_events,
};
use crate::error::{MatrixError, Result};
use crate::model::pdu::Pdu;
use crate::services::jobs::progress::JobHandle;
use crate::services::pipeline::{
    Batch as Published, Committed, EventLookup, Settled, SettledWhenDropped, Subscriber,
};
use crate::services::stream::Stream;
use crate::services::workers::{Stage, Workers};
use crate::storage::events::EventRow;

/// Memory for the index writer before it writes a segment. Live indexing
/// never gets near it between commits; a rebuild does, and a larger budget
/// means fewer, larger segments to write and merge (the memory is freed
/// when the rebuild commits).
const WRITER_BUDGET: usize = 15_000_000;

#[derive(Clone, Copy)]
struct Fields {
    event_id: Field,
    room_id: Field,
    key: Field,
    text: Field,
    stream: Field,
}

pub struct Search {
    index: Index,
    reader: IndexReader,
    /// Made on first use: an idle server with no messages to index keeps
    /// no writer (its threads and buffers).
    writer: Mutex<Option<IndexWriter<TantivyDocument>>>,
    /// The writer was used since the last [`Search::commit_and_release_if_idle`].
    used: AtomicBool,
    fields: Fields,
    dirty: AtomicBool,
    /// A rebuild is running: live events are left to it.
    rebuilding: AtomicBool,
    /// The last rebuild's final pass indexed positions up to this one, and
    /// may have done so before a live event at or below it was indexed:
    /// those are indexed idempotently (delete, then add). Newer ones are
    /// only added, since the deletes cost memory and time at every commit.
    idempotent_through: AtomicI64,
    /// The event stream: its completed position is what a commit records
    /// (see [`Search::payload`]).
    stream: Arc<Stream>,
    /// Stream positions of committed events handed to the [`Indexer`] but
    /// not yet through [`on_stored`]: a commit's position stays below them.
    /// The indexer's task resolves every one (indexed or failed), whatever
    /// the senders do.
    pending: parking_lot::Mutex<BTreeSet<i64>>,
    /// A reindex (rebuild and final pass) is running: commits say so, and
    /// the next start rebuilds if it is killed.
    reindexing: AtomicBool,
    /// The position the last commit before this start recorded, if usable.
    committed_through: Option<i64>,
    /// Held by a reindex throughout, and by purges (shared) while they
    /// delete: a reindex that read events a purge then deleted would put
    /// them back in the index.
    purges: tokio::sync::RwLock<()>,
}

/// What a commit records (the tantivy commit payload, JSON).
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Payload {
    /// Every event at or below this stream position is in the committed
    /// documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    through: Option<i64>,
    /// Committed during a rebuild: the documents are incomplete.
    #[serde(default)]
    rebuild: bool,
}

/// One hit: the event id, its room, and its score.
pub struct Hit {
    pub event_id: String,
    pub room_id: String,
    pub rank: f32,
}

/// What a search asks for.
pub struct SearchQuery<'a> {
    pub term: &'a str,
    /// `content.body`, `content.name`, `content.topic`; empty = all.
    pub keys: Vec<String>,
    /// Rooms the searcher may search in (already intersected with the filter).
    pub rooms: Vec<String>,
    pub recent_first: bool,
    pub offset: usize,
    pub limit: usize,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    // Stored, not indexed: documents are found by `stream` (unique per
    // event). A term per event id, random strings, made building the term
    // dictionary the largest cost of a reindex.
    let event_id = b.add_text_field("event_id", STORED);
    let room_id = b.add_text_field("room_id", STRING | STORED);
    let key = b.add_text_field("key", STRING);
    // Words with their frequencies (for ranking) but not their positions:
    // a search is a set of words, never a phrase.
    let text = b.add_text_field(
        "text",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(IndexRecordOption::WithFreqs),
        ),
    );
    let stream = b.add_i64_field("stream", INDEXED | FAST | STORED);
    (
        b.build(),
        Fields {
            event_id,
            room_id,
            key,
            text,
            stream,
        },
    )
}

/// What storing an event does to the index.
#[derive(Debug, PartialEq)]
enum Change {
    Nothing,
    /// A redaction: the document at the target's stream position goes.
    Remove(i64),
    /// Text to index under `id` at stream position `stream` (the event
    /// itself, or for an edit the event it edits, whose text it replaces:
    /// the document keeps the original's id, room and position). A
    /// document is known by its position, which is unique per event.
    Put {
        id: String,
        key: &'static str,
        text: String,
        stream: i64,
        replaces: bool,
    },
}

/// What the index needs to know about the event an edit edits.
#[derive(Debug, Clone)]
struct Original {
    room_id: ruma::OwnedRoomId,
    sender: ruma::OwnedUserId,
    stream: i64,
}

/// The event an `m.replace` edit (a message) claims to edit, if it is one.
fn replaced_id(kind: &str, content: &Content) -> Option<String> {
    if kind != "m.room.message" {
        return None;
    }
    content.replaces().map(Cow::into_owned)
}

/// The event a redaction redacts: top level before room version 11, in
/// `content` since.
fn redaction_target<'a>(
    kind: &str,
    redacts: Option<&'a str>,
    content: &'a Content,
) -> Option<&'a str> {
    if kind != "m.room.redaction" {
        return None;
    }
    redacts.or_else(|| content.redacts.as_deref())
}

/// The change for an event given its parts (from a `Pdu`, or from a stored
/// row's JSON during a rebuild). For an edit, `original` is the event it
/// edits, if that is an indexed message: the edit counts only from the same
/// sender in the same room (spec, "Event replacements"), else it is ignored.
/// For a redaction, `redacted` is the stream position of the event it
/// redacts, if that is stored.
#[allow(clippy::too_many_arguments)]
fn change_of(
    event_id: &str,
    room_id: &str,
    sender: &str,
    stream: i64,
    kind: &str,
    state_key: Option<&str>,
    content: &Content,
    original: Option<&Original>,
    redacted: Option<i64>,
) -> Change {
    if kind == "m.room.redaction" {
        return redacted.map_or(Change::Nothing, Change::Remove);
    }
    if let Some(target) = replaced_id(kind, content) {
        return match (original, content.new_body()) {
            (Some(o), Some(b)) if o.room_id == room_id && o.sender == sender => Change::Put {
                id: target,
                key: "content.body",
                text: b.into_owned(),
                stream: o.stream,
                replaces: true,
            },
            _ => Change::Nothing,
        };
    }
    let (key, field) = match kind {
        "m.room.message" => ("content.body", &content.body),
        "m.room.name" if state_key == Some("") => ("content.name", &content.name),
        "m.room.topic" if state_key == Some("") => ("content.topic", &content.topic),
        _ => return Change::Nothing,
    };
    field.as_deref().map_or(Change::Nothing, |t| Change::Put {
        id: event_id.to_owned(),
        key,
        text: t.to_owned(),
        stream,
        replaces: false,
    })
}

/// The parts of a stored event the index needs, read from its JSON without
/// building a whole `Pdu` (a rebuild reads every message).
#[derive(serde::Deserialize)]
struct IndexedParts<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    sender: Cow<'a, str>,
    #[serde(borrow, default)]
    state_key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    redacts: Option<Cow<'a, str>>,
}

impl<'a> IndexedParts<'a> {
    fn parse(json: &'a str) -> Result<(Self, Content<'a>)> {
        let parts: Self = serde_json::from_str(json).map_err(MatrixError::internal)?;
        let content = parts
            .content
            .map(|c| Content::parse(c.get()))
            .unwrap_or_default();
        Ok((parts, content))
    }
}

impl Search {
    /// [`Search::open`] on `<data_dir>/search` when `search.enabled` is on
    /// (shared), else none.
    pub fn open_if_enabled(
        config: &crate::config::Config,
        stream: &Arc<Stream>,
    ) -> anyhow::Result<(Option<Arc<Self>>, bool)> {
        if !config.search.enabled {
            return Ok((None, false));
        }
        let (search, rebuild) = Self::open(&Self::index_dir(&config.data_dir), stream.clone())?;
        Ok((Some(Arc::new(search)), rebuild))
    }

    /// Opens the index in `dir`, or creates it; the bool says whether it
    /// needs rebuilding from the events (it was created, or its last commit
    /// gives no position to catch up from: made during a rebuild, or by an
    /// older Myelin). `stream` is the event stream, whose completed
    /// position each commit records.
    pub fn open(dir: &Path, stream: Arc<Stream>) -> anyhow::Result<(Self, bool)> {
        match Self::try_open(dir, stream.clone()) {
            Ok(s) => Ok(s),
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "search index unusable; recreating it");
                let _ = std::fs::remove_dir_all(dir);
                let (s, _) = Self::try_open(dir, stream)?;
                Ok((s, true))
            }
        }
    }

    fn try_open(dir: &Path, stream: Arc<Stream>) -> anyhow::Result<(Self, bool)> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema();
        let created = !dir.join("meta.json").exists();
        let directory = tantivy::directory::MmapDirectory::open(dir)?;
        let index = Index::open_or_create(directory, schema)?;
        let payload: Payload = index
            .load_metas()?
            .payload
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or_default();
        let committed_through = payload.through.filter(|_| !payload.rebuild && !created);
        // A writer can be made (the index is usable); made again when needed.
        drop(index.writer_with_num_threads::<TantivyDocument>(1, WRITER_BUDGET)?);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok((
            Self {
                index,
                reader,
                writer: Mutex::new(None),
                fields,
                used: AtomicBool::new(false),
                dirty: AtomicBool::new(false),
                rebuilding: AtomicBool::new(false),
                idempotent_through: AtomicI64::new(0),
                stream,
                pending: Default::default(),
                reindexing: AtomicBool::new(false),
                committed_through,
                purges: tokio::sync::RwLock::new(()),
            },
            committed_through.is_none(),
        ))
    }

    /// The index writer, made now if there is none yet.
    fn writer(&self) -> Result<MappedMutexGuard<'_, IndexWriter<TantivyDocument>>> {
        let mut guard = self.writer.lock();
        self.used.store(true, Ordering::Release);
        if guard.is_none() {
            *guard = Some(
                self.index
                    .writer_with_num_threads(1, WRITER_BUDGET)
                    .map_err(MatrixError::internal)?,
            );
        }
        Ok(MutexGuard::map(guard, |w| {
            w.as_mut().expect("the writer was made above")
        }))
    }

    /// A stored event at `pos` is on its way to [`on_stored`]: called
    /// before its position completes.
    pub fn note_pending(&self, pos: i64) {
        self.pending.lock().insert(pos);
    }

    /// How many stored events wait to be indexed.
    pub fn pending_count(&self) -> usize {
        self.pending.lock().len()
    }

    /// The event at `pos` went through [`on_stored`] (or was not stored).
    pub fn note_indexed(&self, pos: i64) {
        self.pending.lock().remove(&pos);
    }

    /// What the next commit records; called under the writer's lock, so
    /// that every event at or below the position that is no longer pending
    /// went into the writer before the commit.
    fn payload(&self) -> String {
        let payload = if self.reindexing.load(Ordering::Acquire) {
            Payload {
                through: None,
                rebuild: true,
            }
        } else {
            let current = self.stream.current();
            let through = match self.pending.lock().first() {
                Some(first) => current.min(first - 1),
                None => current,
            };
            Payload {
                through: Some(through),
                rebuild: false,
            }
        };
        serde_json::to_string(&payload).unwrap_or_default()
    }

    /// Commits with the position ([`Search::payload`]).
    fn commit_writer(&self, writer: &mut IndexWriter<TantivyDocument>) -> Result<()> {
        let payload = self.payload();
        let mut prepared = writer.prepare_commit().map_err(MatrixError::internal)?;
        prepared.set_payload(&payload);
        prepared.commit().map_err(MatrixError::internal)?;
        Ok(())
    }

    /// Keeps a reindex from starting (or waits for one to end) while a
    /// purge deletes events from the database and the index.
    pub async fn purge_guard(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.purges.read().await
    }

    pub fn index_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("search")
    }

    fn add(
        &self,
        writer: &IndexWriter<TantivyDocument>,
        event_id: &str,
        room_id: &str,
        key: &str,
        text: &str,
        stream: i64,
    ) -> Result<()> {
        let f = self.fields;
        writer
            .add_document(doc!(
                f.event_id => event_id, f.room_id => room_id, f.key => key, f.text => text, f.stream => stream
            ))
            .map_err(MatrixError::internal)?;
        Ok(())
    }

    /// Applies one change. `idempotent`: first remove whatever is indexed
    /// under the id (an event indexed twice stays one document).
    fn apply(
        &self,
        writer: &IndexWriter<TantivyDocument>,
        change: Change,
        room_id: &str,
        idempotent: bool,
    ) -> Result<bool> {
        let f = self.fields;
        match change {
            Change::Nothing => return Ok(false),
            Change::Remove(target) => {
                writer.delete_term(Term::from_field_i64(f.stream, target));
            }
            Change::Put {
                id,
                key,
                text,
                stream,
                replaces,
            } => {
                if replaces || idempotent {
                    writer.delete_term(Term::from_field_i64(f.stream, stream));
                }
                self.add(writer, &id, room_id, key, &text, stream)?;
            }
        }
        self.dirty.store(true, Ordering::Release);
        Ok(true)
    }

    /// Indexes a newly stored event, or applies its edit or redaction (see
    /// [`on_stored`], which finds the events these need). While a rebuild
    /// runs, it is left to the rebuild.
    fn on_event(
        &self,
        pdu: &Pdu,
        original: Option<&Original>,
        redacted: Option<i64>,
        restore: Option<(&Pdu, String)>,
    ) -> Result<()> {
        // Checked under the writer's lock: a rebuild sets the flag before it
        // clears the index under the same lock.
        let writer = self.writer()?;
        if self.rebuilding.load(Ordering::Acquire) {
            return Ok(());
        }
        let change = change_of(
            pdu.event_id.as_str(),
            pdu.room_id.as_str(),
            pdu.sender.as_str(),
            pdu.stream_ordering,
            &pdu.kind.to_string(),
            pdu.state_key.as_deref(),
            &Content::parse(pdu.content.get()),
            original,
            redacted,
        );
        let idempotent = pdu.stream_ordering <= self.idempotent_through.load(Ordering::Acquire);
        self.apply(&writer, change, pdu.room_id.as_str(), idempotent)?;
        // A redacted edit: the edited event gets back its latest text.
        if let Some((orig, text)) = restore {
            let put = Change::Put {
                id: orig.event_id.to_string(),
                key: "content.body",
                text,
                stream: orig.stream_ordering,
                replaces: true,
            };
            self.apply(&writer, put, orig.room_id.as_str(), true)?;
        }
        Ok(())
    }

    /// Indexes stored events during a rebuild, in stream order: messages,
    /// names, topics, edits and redactions. Returns how many rows were not
    /// redactions.
    fn index_rows(&self, batch: &Batch, idempotent: bool) -> Result<u64> {
        let rows = &batch.rows;
        if rows.is_empty() {
            return Ok(0);
        }
        let writer = self.writer()?;
        let mut count = 0;
        for row in rows {
            let (parts, content) = IndexedParts::parse(&row.json)?;
            if parts.kind != "m.room.redaction" {
                count += 1;
            }
            // An edit counts only after the message it edits.
            let original = replaced_id(&parts.kind, &content)
                .and_then(|id| batch.originals.get(&id))
                .filter(|o| o.stream < row.stream_ordering);
            let change = change_of(
                row.event_id.as_str(),
                row.room_id.as_str(),
                &parts.sender,
                row.stream_ordering,
                &parts.kind,
                parts.state_key.as_deref(),
                &content,
                original,
                redaction_target(&parts.kind, parts.redacts.as_deref(), &content)
                    .and_then(|t| batch.redacted.get(t).copied()),
            );
            self.apply(&writer, change, row.room_id.as_str(), idempotent)?;
        }
        Ok(count)
    }

    /// Removes everything of a room (after a purge).
    pub fn delete_room(&self, room_id: &str) -> Result<()> {
        self.writer()?
            .delete_term(Term::from_field_text(self.fields.room_id, room_id));
        self.dirty.store(true, Ordering::Release);
        self.commit()
    }

    /// Removes single events, by stream position (after a history purge).
    pub fn delete_events(&self, streams: &[i64]) -> Result<()> {
        {
            let writer = self.writer()?;
            for &stream in streams {
                writer.delete_term(Term::from_field_i64(self.fields.stream, stream));
            }
        }
        self.dirty.store(true, Ordering::Release);
        self.commit()
    }

    /// Makes pending changes searchable.
    pub fn commit(&self) -> Result<()> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            self.commit_writer(&mut *self.writer()?)?;
            self.reader.reload().map_err(MatrixError::internal)?;
        }
        Ok(())
    }

    /// Commits what the writer holds as indexed through `through` (a
    /// catch-up's progress: every event at or below it is in the documents).
    fn commit_through(&self, through: i64) -> Result<()> {
        let payload = serde_json::to_string(&Payload {
            through: Some(through),
            rebuild: false,
        })
        .unwrap_or_default();
        let mut writer = self.writer()?;
        let mut prepared = writer.prepare_commit().map_err(MatrixError::internal)?;
        prepared.set_payload(&payload);
        prepared.commit().map_err(MatrixError::internal)?;
        Ok(())
    }

    /// [`Search::commit`], then drops the writer if nothing went through it
    /// since the previous call (called every few seconds). Once it has
    /// indexed, a writer holds its indexing thread, a 10,000-document
    /// channel and its arena: 15-20 MB that an idle server gives back.
    pub fn commit_and_release_if_idle(&self) -> Result<()> {
        self.commit()?;
        if self.used.swap(false, Ordering::AcqRel) || self.rebuilding.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut writer = self.writer.lock();
        // Checked again under the lock: a change may have come in between.
        if !self.used.load(Ordering::Acquire) && !self.dirty.load(Ordering::Acquire) {
            *writer = None;
        }
        Ok(())
    }

    /// Whether a writer is open (tests).
    pub fn has_writer(&self) -> bool {
        self.writer.lock().is_some()
    }

    /// Empties the index (the first step of a rebuild).
    pub fn clear(&self) -> Result<()> {
        // No writer yet and nothing indexed: nothing to clear (and no writer
        // to make, on the start of a server without messages).
        if self.writer.lock().is_none() && self.reader.searcher().num_docs() == 0 {
            return Ok(());
        }
        let mut writer = self.writer()?;
        // Documents added but not yet committed would survive
        // `delete_all_documents`: commit them first, then delete everything.
        self.commit_writer(&mut writer)?;
        writer
            .delete_all_documents()
            .map_err(MatrixError::internal)?;
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Runs a query; returns one page of hits and the total count.
    pub fn query(&self, q: &SearchQuery<'_>) -> Result<(Vec<Hit>, usize)> {
        self.commit()?;
        if q.rooms.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let f = self.fields;
        // The term is plain words, every one required: it goes through the
        // text field's own tokenizer, never tantivy's query syntax (which
        // would let `room_id:...` reach other fields).
        let mut analyzer = self
            .index
            .tokenizer_for_field(f.text)
            .map_err(MatrixError::internal)?;
        let mut words = Vec::new();
        let mut stream = analyzer.token_stream(q.term);
        while let Some(token) = stream.next() {
            words.push(token.text.clone());
        }
        words.sort();
        words.dedup();
        if words.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let text_query: Box<dyn Query> = Box::new(BooleanQuery::new(
            words
                .iter()
                .map(|w| {
                    let t: Box<dyn Query> = Box::new(TermQuery::new(
                        Term::from_field_text(f.text, w),
                        IndexRecordOption::WithFreqs,
                    ));
                    (Occur::Must, t)
                })
                .collect(),
        ));
        let rooms: Vec<(Occur, Box<dyn Query>)> = q
            .rooms
            .iter()
            .map(|r| {
                let t: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(f.room_id, r),
                    IndexRecordOption::Basic,
                ));
                (Occur::Should, t)
            })
            .collect();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![
            (Occur::Must, text_query),
            (Occur::Must, Box::new(BooleanQuery::new(rooms))),
        ];
        if !q.keys.is_empty() {
            let keys: Vec<(Occur, Box<dyn Query>)> = q
                .keys
                .iter()
                .map(|k| {
                    let t: Box<dyn Query> = Box::new(TermQuery::new(
                        Term::from_field_text(f.key, k),
                        IndexRecordOption::Basic,
                    ));
                    (Occur::Should, t)
                })
                .collect();
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(keys))));
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let total = searcher
            .search(&query, &Count)
            .map_err(MatrixError::internal)?;
        let limit = q.limit.max(1);
        let docs: Vec<(f32, tantivy::DocAddress)> = if q.recent_first {
            let top = TopDocs::with_limit(limit)
                .and_offset(q.offset)
                .order_by_fast_field::<i64>("stream", Order::Desc);
            searcher
                .search(&query, &top)
                .map_err(MatrixError::internal)?
                .into_iter()
                .map(|(_, addr)| (0.0, addr))
                .collect()
        } else {
            let top = TopDocs::with_limit(limit)
                .and_offset(q.offset)
                .order_by_score();
            searcher
                .search(&query, &top)
                .map_err(MatrixError::internal)?
        };
        let mut hits = Vec::with_capacity(docs.len());
        for (rank, addr) in docs {
            let d: TantivyDocument = searcher.doc(addr).map_err(MatrixError::internal)?;
            let text = |field| {
                d.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            hits.push(Hit {
                event_id: text(f.event_id),
                room_id: text(f.room_id),
                rank,
            });
        }
        Ok((hits, total))
    }
}

/// Rebuilds the index from the events table: messages, names and topics in
/// stream order, edits applied, redacted events left out. Logs progress every
/// 10,000 events and `Indexed N events in T` at the end.
/// Rebuilds the index from the events table. With a job id, progress goes
/// into that job as well as the log.
///
/// While it runs, newly stored events are not indexed live: the rebuild
/// reads the events table in stream order until it has caught up, then live
/// indexing resumes and one last pass (idempotent, so nothing is indexed
/// twice) covers what arrived in between.
pub async fn reindex(s: &crate::services::Services, job: Option<&JobHandle>) -> Result<u64> {
    let search = s
        .search
        .as_ref()
        .ok_or_else(|| MatrixError::unknown(http::StatusCode::BAD_REQUEST, "Search is disabled"))?;
    let _no_purges = search.purges.write().await;
    let started = std::time::Instant::now();
    // Commits made from here until this reindex succeeds say that the
    // index is being rebuilt (so a start after a crash rebuilds again).
    search.reindexing.store(true, Ordering::Release);
    search.rebuilding.store(true, Ordering::Release);
    let result = rebuild(s, search, job, started).await;
    search.rebuilding.store(false, Ordering::Release);
    let (after, mut count) = result?;
    // What was stored while live indexing was off (and maybe some of what
    // was indexed live since: idempotent): every position handed out before
    // live indexing resumed, once they are all written.
    let target = s.stream.last_reserved();
    // Live indexing of anything up to `target` may come after this pass.
    search.idempotent_through.store(target, Ordering::Release);
    if !s
        .stream
        .wait_for(target, std::time::Duration::from_secs(30))
        .await
    {
        tracing::warn!(
            target,
            "reindex: positions still unwritten after 30 s; a later reindex picks up what this one misses"
        );
    }
    // Newer events are indexed live (they were reserved after live
    // indexing resumed), and only added: not read here.
    count += index_span(s, search, after, target, false).await?;
    search.reindexing.store(false, Ordering::Release);
    // Committed even if nothing changed since the last commit: the position
    // replaces the rebuild mark.
    search.dirty.store(true, Ordering::Release);
    search.commit()?;
    tracing::info!("Indexed {count} events in {:?}", started.elapsed());
    Ok(count)
}

/// The job runner's entry for a reindex.
pub fn reindex_job(
    s: Arc<crate::services::Services>,
    job: JobHandle,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>> {
    Box::pin(async move { reindex(&s, Some(&job)).await.map(drop) })
}

/// Indexes (idempotently) the stored events at completed positions in
/// `(after, target]`, [`BATCH`] at a time; returns how many.
async fn index_span(
    s: &crate::services::Services,
    search: &Search,
    mut after: i64,
    target: i64,
    checkpoints: bool,
) -> Result<u64> {
    let mut count = 0;
    let mut uncommitted = 0;
    loop {
        let (batch, next) = read_batch(s, after, target).await?;
        let read = batch.rows.len() as i64;
        count += search.index_rows(&batch, true)?;
        uncommitted += read;
        if checkpoints && read == BATCH && uncommitted >= CHECKPOINT_EVERY {
            // Idempotent indexing queues a delete per event until the next
            // commit: a long catch-up commits as it goes, so its memory
            // stays bounded whatever a crash or a bulk import left to index.
            search.commit_through(next)?;
            uncommitted = 0;
        }
        if read < BATCH {
            return Ok(count);
        }
        after = next;
    }
}

/// How many events a catch-up indexes between commits.
const CHECKPOINT_EVERY: i64 = 5 * BATCH;

/// At start, before the server serves: indexes what was stored after the
/// position the index's last commit recorded (what a crash lost), up to the
/// stream's head, and commits. Redactions and edits among those events are
/// applied; purges after that position removed their documents themselves
/// (or run again as interrupted jobs). Nothing to do for an index that
/// needs a rebuild (see [`Search::open`]). An index ahead of the database
/// (restored from an older backup) is an error: the caller rebuilds it.
pub async fn catch_up(s: &crate::services::Services) -> Result<u64> {
    let Some(search) = &s.search else {
        return Ok(0);
    };
    let Some(after) = search.committed_through else {
        return Ok(0);
    };
    let target = s.stream.current();
    if after > target {
        return Err(MatrixError::internal(format!(
            "the search index is at stream position {after}, past the database's {target}"
        )));
    }
    if after == target {
        return Ok(0);
    }
    let started = std::time::Instant::now();
    let count = index_span(s, search, after, target, true).await?;
    search.dirty.store(true, Ordering::Release);
    search.commit()?;
    tracing::info!(from = after, to = target, count, elapsed = ?started.elapsed(), "search index caught up");
    Ok(count)
}

/// Updates the index for a newly stored event: finds the event an edit
/// edits (the edit counts only if it is an indexed message of the same
/// sender and room) and, when an edit is redacted, the text the edited
/// event falls back to (its latest remaining edit, or its own body).
async fn on_stored(search: &Search, events: &dyn EventLookup, pdu: &Pdu) -> Result<()> {
    if search.rebuilding.load(Ordering::Acquire) {
        return Ok(());
    }
    let content = Content::parse(pdu.content.get());
    let mut original = None;
    if let Some(target) = replaced_id(&pdu.kind.to_string(), &content)
        && let Some(o) = events.event(&target).await?
        && o.redacted_by.is_none()
        && o.kind == ruma::events::TimelineEventType::RoomMessage
        && replaced_id("m.room.message", &Content::parse(o.content.get())).is_none()
    {
        original = Some(Original {
            room_id: o.room_id.clone(),
            sender: o.sender.clone(),
            stream: o.stream_ordering,
        });
    }
    let mut restore = None;
    let mut redacted_stream = None;
    let redacted = pdu.redacts.as_ref();
    let redacted_pdu = match redacted {
        Some(id) => events.event(id.as_str()).await?,
        None => None,
    };
    if let Some(r) = &redacted_pdu {
        redacted_stream = Some(r.stream_ordering);
    }
    if let Some(redacted) = redacted
        && let Some(edit) = redacted_pdu
        && let Some(target) = replaced_id("m.room.message", &Content::parse(edit.content.get()))
        && let Some(orig) = events.event(&target).await?
        && orig.redacted_by.is_none()
        && orig.sender == edit.sender
        && orig.room_id == edit.room_id
    {
        // The newest edit still standing, else the original's own body.
        let mut text = Content::parse(orig.content.get())
            .body
            .0
            .map(Cow::into_owned);
        let mut newest = 0;
        for id in events.edits_of(orig.event_id.as_str()).await? {
            if id.as_str() == redacted.as_str() {
                continue;
            }
            if let Some(e) = events.event(id.as_str()).await?
                && e.redacted_by.is_none()
                && e.sender == orig.sender
                && e.room_id == orig.room_id
                && e.stream_ordering > newest
                && let Some(body) = Content::parse(e.content.get()).new_body()
            {
                newest = e.stream_ordering;
                text = Some(body.into_owned());
            }
        }
        restore = text.map(|t| (orig, t));
    }
    search.on_event(
        pdu,
        original.as_ref(),
        redacted_stream,
        restore.as_ref().map(|(o, t)| (&**o, t.clone())),
    )
}

/// Search as a subscriber of the event pipeline: indexes committed events
/// in stream order on a task of its own (which no client can cancel), so
/// that looking up what an edit or a redaction points at stays off the
/// writer task.
///
/// The writer's senders wait for their batch to be indexed before they
/// answer (the batch's [`Settled`]): a `/search` made after a send, an edit
/// or a redaction was answered finds it, as with Synapse, which indexes in
/// the event's own transaction. Only batches with an event that can change
/// the index (messages, names, topics, redactions) are waited for. Each
/// position is marked pending before it completes and resolved by the task
/// once its event went through [`on_stored`] (indexed or not), so the
/// position a commit records always advances.
pub struct Indexer {
    queue: tokio::sync::mpsc::UnboundedSender<Queued>,
    /// Taken by [`Indexer::start`]; what is queued before waits.
    queued: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Queued>>>,
    search: Arc<Search>,
}

/// A batch's indexable events, with what their senders wait on.
struct Queued {
    events: Vec<Committed>,
    lookup: Arc<dyn EventLookup>,
    _settled: SettledWhenDropped,
}

impl Indexer {
    pub fn new(search: Arc<Search>) -> Arc<Self> {
        let (queue, rx) = tokio::sync::mpsc::unbounded_channel::<Queued>();
        Arc::new(Self {
            queue,
            queued: Mutex::new(Some(rx)),
            search,
        })
    }

    /// Starts the indexing task (once). At shutdown, after the writer has
    /// drained, it indexes everything still queued and stops
    /// ([`Stage::Subscribers`]).
    pub fn start(&self, workers: &Workers) {
        let Some(mut rx) = self.queued.lock().take() else {
            return;
        };
        let search = self.search.clone();
        workers.spawn(
            "search indexer",
            Stage::Subscribers,
            |mut stop| async move {
                loop {
                    tokio::select! {
                        biased;
                        queued = rx.recv() => match queued {
                            Some(queued) => index_guarded(&search, queued).await,
                            None => return,
                        },
                        () = stop.requested() => break,
                    }
                }
                while let Ok(queued) = rx.try_recv() {
                    index_guarded(&search, queued).await;
                }
            },
        );
    }
}

/// [`index_queued`] on a task of its own, so that a panic while indexing
/// costs that batch's documents (a reindex repairs them) but neither stops
/// the indexer nor leaves the batch's positions pending, which would hold
/// the index's committed position back until a restart.
async fn index_guarded(search: &Arc<Search>, queued: Queued) {
    let positions: Vec<i64> = queued.events.iter().map(|e| e.pos).collect();
    let indexing = search.clone();
    if let Err(e) = tokio::spawn(async move { index_queued(&indexing, queued).await }).await {
        tracing::error!(error = %e, "indexing a batch of events for search failed; a reindex repairs the index");
        for pos in positions {
            search.note_indexed(pos);
        }
    }
}

/// Indexes a batch's events in order, resolving each position.
async fn index_queued(search: &Search, queued: Queued) {
    for event in &queued.events {
        if let Err(e) = on_stored(search, &*queued.lookup, &event.pdu).await {
            // The event is stored; a reindex repairs the index.
            tracing::warn!(event_id = %event.pdu.event_id, error = %e.message(), "could not index event for search");
        }
        search.note_indexed(event.pos);
    }
}

/// Whether an event can change the index (see [`change_of`]).
fn may_change_index(pdu: &Pdu) -> bool {
    use ruma::events::TimelineEventType as T;
    matches!(
        pdu.kind,
        T::RoomMessage | T::RoomName | T::RoomTopic | T::RoomRedaction
    )
}

impl Subscriber for Indexer {
    fn committed(&self, batch: &Published) -> Option<Settled> {
        let events: Vec<Committed> = batch
            .events
            .iter()
            .filter(|e| may_change_index(&e.pdu))
            .cloned()
            .collect();
        if events.is_empty() {
            return None;
        }
        for e in &events {
            self.search.note_pending(e.pos);
        }
        let (done, settled) = Settled::new();
        let queued = Queued {
            events,
            lookup: batch.lookup.clone(),
            _settled: done,
        };
        if let Err(tokio::sync::mpsc::error::SendError(lost)) = self.queue.send(queued) {
            // The task has ended (it panicked): the next start catches up.
            for e in &lost.events {
                self.search.note_indexed(e.pos);
            }
            return None;
        }
        Some(settled)
    }
}

/// Events read per query during a rebuild.
const BATCH: i64 = 10_000;

/// Stored events to index during a rebuild.
#[derive(Default)]
struct Batch {
    rows: Vec<EventRow>,
    /// The stream position of each event a redaction among `rows` redacts.
    redacted: HashMap<String, i64>,
    /// The messages that edits among `rows` edit, where they can be edited
    /// (unredacted messages that are not edits themselves).
    originals: HashMap<String, Original>,
}

/// The next batch of indexable events after stream position `after` (and
/// at most at `limit`), and the position it reaches. Only positions the
/// stream has completed are read: rooms commit out of order, so a position
/// past an unfinished one may be visible before it, and reading past it
/// would skip it for good.
async fn read_batch(s: &crate::services::Services, after: i64, limit: i64) -> Result<(Batch, i64)> {
    let upto = s.stream.current().min(limit);
    let rows = s.storage.indexable_events_after(after, upto, BATCH).await?;
    let reached = match rows.last() {
        Some(last) if rows.len() as i64 == BATCH => last.stream_ordering,
        _ => upto.max(after),
    };
    Ok((with_targets(s, rows).await?, reached))
}

/// The indexable events at stream positions `(from, to]`, which are
/// completed positions, at most [`BATCH`] of them.
async fn read_range(s: &crate::services::Services, (from, to): (i64, i64)) -> Result<Batch> {
    let rows = match s.storage.indexable_events_packed(from, to).await? {
        Some(rows) => rows,
        None => s.storage.indexable_events_after(from, to, BATCH).await?,
    };
    with_targets(s, rows).await
}

/// Reads one or two ranges (two concurrently, one connection each); the
/// batches come back in the ranges' order.
async fn read_ranges(s: &crate::services::Services, ranges: &[(i64, i64)]) -> Result<Vec<Batch>> {
    match *ranges {
        [one] => Ok(vec![read_range(s, one).await?]),
        [first, second] => {
            let (a, b) = tokio::try_join!(read_range(s, first), read_range(s, second))?;
            Ok(vec![a, b])
        }
        _ => Ok(Vec::new()),
    }
}

/// A batch of `rows` with the positions of what their redactions and
/// edits name.
async fn with_targets(s: &crate::services::Services, rows: Vec<EventRow>) -> Result<Batch> {
    // Redactions and edits name their targets by id: look those up. (The
    // text tests are a cheap filter; the parse decides.)
    let (mut redacted, mut edited) = (Vec::new(), Vec::new());
    for row in &rows {
        if !row.json.contains("m.room.redaction") && !row.json.contains("m.replace") {
            continue;
        }
        let (parts, content) = IndexedParts::parse(&row.json)?;
        if let Some(t) = redaction_target(&parts.kind, parts.redacts.as_deref(), &content) {
            redacted.push(t.to_owned());
        }
        edited.extend(replaced_id(&parts.kind, &content));
    }
    let redacted = if redacted.is_empty() {
        HashMap::new()
    } else {
        let ids: Vec<&str> = redacted.iter().map(String::as_str).collect();
        s.storage.stream_orderings(&ids).await?
    };
    let originals = if edited.is_empty() {
        HashMap::new()
    } else {
        let ids: Vec<&str> = edited.iter().map(String::as_str).collect();
        s.storage
            .editable_messages(&ids)
            .await?
            .into_iter()
            .map(|m| {
                let o = Original {
                    room_id: m.room_id,
                    sender: m.sender,
                    stream: m.stream_ordering,
                };
                (m.event_id.to_string(), o)
            })
            .collect()
    };
    Ok(Batch {
        rows,
        redacted,
        originals,
    })
}

async fn rebuild(
    s: &crate::services::Services,
    search: &std::sync::Arc<Search>,
    job: Option<&JobHandle>,
    started: std::time::Instant,
) -> Result<(i64, u64)> {
    search.clear()?;
    // Everything up to the position completed now; the catch-up pass in
    // `reindex` takes what comes after. Read in spans of BATCH positions
    // (so at most BATCH events each), two spans at a time on two
    // connections, while the two before are indexed: reading rows is the
    // slower half.
    let upto = s.stream.current();
    let spans: Vec<(i64, i64)> = (0..upto)
        .step_by(BATCH as usize)
        .map(|from| (from, (from + BATCH).min(upto)))
        .collect();
    let mut pairs = spans.chunks(2);
    let mut count = 0u64;
    let mut batches = read_ranges(s, pairs.next().unwrap_or_default()).await?;
    while !batches.is_empty() {
        let indexer = search.clone();
        let indexing = tokio::task::spawn_blocking(move || {
            let mut indexed = 0;
            for batch in &batches {
                indexed += indexer.index_rows(batch, false)?;
            }
            Ok::<_, MatrixError>(indexed)
        });
        let (indexed, next) =
            tokio::join!(indexing, read_ranges(s, pairs.next().unwrap_or_default()));
        let indexed = indexed.map_err(MatrixError::internal)??;
        count += indexed;
        if let Some(job) = job {
            job.progress(indexed).await;
            job.pause_point().await;
        }
        tracing::info!(count, elapsed = ?started.elapsed(), "reindexing: events indexed so far");
        batches = next?;
    }
    Ok((upto, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_writer_is_released_and_made_again_when_needed() {
        let dir = tempfile::tempdir().unwrap();
        let (search, _) = Search::open(dir.path(), Arc::new(Stream::new(0))).unwrap();
        let writer = search.writer().unwrap();
        search
            .add(&writer, "$a", "!r:x", "content.body", "hello", 1)
            .unwrap();
        drop(writer);
        search.dirty.store(true, Ordering::Release);
        search.commit_and_release_if_idle().unwrap();
        assert!(search.has_writer(), "used since the last call: kept");
        search.commit_and_release_if_idle().unwrap();
        assert!(!search.has_writer(), "a quiet interval: released");
        assert_eq!(search.reader.searcher().num_docs(), 1, "committed before");
        let writer = search.writer().unwrap();
        search
            .add(&writer, "$b", "!r:x", "content.body", "again", 2)
            .unwrap();
        drop(writer);
        search.dirty.store(true, Ordering::Release);
        search.commit_and_release_if_idle().unwrap();
        assert_eq!(
            search.reader.searcher().num_docs(),
            2,
            "a new writer indexes"
        );
    }

    #[test]
    fn a_commit_records_the_position_below_events_not_yet_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let stream = Arc::new(Stream::new(10));
        let committed = |s: &Search| {
            s.dirty.store(true, Ordering::Release);
            s.commit().unwrap();
            let payload = s.index.load_metas().unwrap().payload.unwrap();
            let payload: Payload = serde_json::from_str(&payload).unwrap();
            assert!(!payload.rebuild);
            payload.through
        };
        let (search, rebuild) = Search::open(dir.path(), stream.clone()).unwrap();
        assert!(rebuild, "a new index is built from the events");
        assert_eq!(committed(&search), Some(10));
        // 11 is stored (its position completed) but not yet indexed.
        let r = stream.reserve();
        search.note_pending(r.pos());
        stream.complete(r);
        assert_eq!(stream.current(), 11);
        assert_eq!(search.pending_count(), 1, "the lag operators see");
        assert_eq!(committed(&search), Some(10));
        search.note_indexed(11);
        assert_eq!(search.pending_count(), 0);
        assert_eq!(committed(&search), Some(11));
        // A reindex's commits say so: the next start rebuilds.
        search.reindexing.store(true, Ordering::Release);
        search.dirty.store(true, Ordering::Release);
        search.commit().unwrap();
        drop(search);
        let (reopened, rebuild) = Search::open(dir.path(), stream).unwrap();
        assert!(rebuild && reopened.committed_through.is_none());
    }

    /// No other events: enough for plain messages.
    struct NoEvents;

    impl EventLookup for NoEvents {
        fn event<'a>(
            &'a self,
            _: &'a str,
        ) -> crate::services::pipeline::BoxFuture<'a, Result<Option<Arc<Pdu>>>> {
            Box::pin(async { Ok(None) })
        }

        fn edits_of<'a>(
            &'a self,
            _: &'a str,
        ) -> crate::services::pipeline::BoxFuture<'a, Result<Vec<ruma::OwnedEventId>>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    fn committed_message(pos: i64, body: &str) -> Committed {
        let json = serde_json::json!({
            "type": "m.room.message", "room_id": "!r:x", "sender": "@a:x",
            "origin_server_ts": 1, "depth": pos, "prev_events": [], "auth_events": [],
            "content": {"msgtype": "m.text", "body": body},
        });
        let ruma::CanonicalJsonValue::Object(obj) =
            ruma::canonical_json::to_canonical_value(&json).unwrap()
        else {
            unreachable!()
        };
        let mut pdu = Pdu::from_json(
            ruma::OwnedEventId::try_from(format!("$e{pos}")).unwrap(),
            ruma::OwnedRoomId::try_from("!r:x").unwrap(),
            obj,
        )
        .unwrap();
        pdu.stream_ordering = pos;
        Committed {
            pdu: Arc::new(pdu),
            pos,
            redacts: None,
        }
    }

    /// The defect this guards against: indexing ran in the sender's
    /// request, and a sender that went away after its event was queued
    /// left the position pending for good (the committed position stuck
    /// below it until a restart). Now the indexer's task resolves it
    /// whether or not anyone waits.
    #[tokio::test]
    async fn a_sender_that_goes_away_leaves_no_position_pending() {
        let dir = tempfile::tempdir().unwrap();
        let stream = Arc::new(Stream::new(10));
        let (search, _) = Search::open(dir.path(), stream.clone()).unwrap();
        let search = Arc::new(search);
        let indexer = Indexer::new(search.clone());
        let workers = Workers::default();
        indexer.start(&workers);
        let r = stream.reserve();
        let batch = Published {
            events: vec![committed_message(r.pos(), "hello")].into(),
            lookup: Arc::new(NoEvents),
        };
        let settled = indexer.committed(&batch).expect("a message is waited for");
        stream.complete(r);
        // The sender goes away without waiting.
        drop(settled);
        // Whoever waits sees it done (another sender of the same batch).
        let again = indexer.committed(&Published {
            events: vec![committed_message(12, "again")].into(),
            lookup: Arc::new(NoEvents),
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), again.unwrap().wait())
            .await
            .expect("indexed");
        assert!(search.pending.lock().is_empty(), "nothing left pending");
        search.dirty.store(true, Ordering::Release);
        search.commit().unwrap();
        let payload: Payload =
            serde_json::from_str(&search.index.load_metas().unwrap().payload.unwrap()).unwrap();
        assert_eq!(payload.through, Some(11), "the committed position advanced");
        let q = tantivy::query::TermQuery::new(
            Term::from_field_text(search.fields.text, "hello"),
            IndexRecordOption::Basic,
        );
        assert_eq!(search.reader.searcher().search(&q, &Count).unwrap(), 1);
        // Events that cannot change the index are not waited for.
        let mut member = committed_message(13, "x");
        Arc::get_mut(&mut member.pdu).unwrap().kind = ruma::events::TimelineEventType::RoomMember;
        let batch = Published {
            events: vec![member].into(),
            lookup: Arc::new(NoEvents),
        };
        assert!(indexer.committed(&batch).is_none());
    }

    fn row(stream: i64, event_id: &str, json: serde_json::Value) -> EventRow {
        EventRow {
            stream_ordering: stream,
            event_id: event_id.try_into().unwrap(),
            room_id: "!r:x".try_into().unwrap(),
            depth: stream,
            state_group: None,
            redacted_by: None,
            json: json.to_string(),
            txn: None,
        }
    }

    fn batch(rows: Vec<EventRow>, redacted: &[(&str, i64)], edited: &[(&str, i64)]) -> Batch {
        let original = |stream| Original {
            room_id: "!r:x".try_into().unwrap(),
            sender: "@a:x".try_into().unwrap(),
            stream,
        };
        Batch {
            rows,
            redacted: redacted
                .iter()
                .map(|(id, s)| (id.to_string(), *s))
                .collect(),
            originals: edited
                .iter()
                .map(|(id, s)| (id.to_string(), original(*s)))
                .collect(),
        }
    }

    #[test]
    fn a_rebuild_finds_documents_by_stream_position() {
        let dir = tempfile::tempdir().unwrap();
        let (search, _) = Search::open(dir.path(), Arc::new(Stream::new(0))).unwrap();
        let message = |body: &str| serde_json::json!({"type": "m.room.message", "sender": "@a:x", "content": {"msgtype": "m.text", "body": body}});
        let first = batch(
            vec![
                row(1, "$one", message("first")),
                row(2, "$two", message("second")),
            ],
            &[],
            &[],
        );
        assert_eq!(search.index_rows(&first, false).unwrap(), 2);
        // A later batch: an edit of $one, and a redaction of $two (found by
        // its position, as `read_batch` looks it up); a v11 redaction names
        // its target in content.
        let edit = serde_json::json!({"type": "m.room.message", "sender": "@a:x", "content": {
            "msgtype": "m.text", "body": "* edited",
            "m.new_content": {"msgtype": "m.text", "body": "edited"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$one"}}});
        let redaction = serde_json::json!({"type": "m.room.redaction", "sender": "@a:x", "content": {"redacts": "$two"}});
        let second = batch(
            vec![row(3, "$edit", edit), row(4, "$red", redaction)],
            &[("$two", 2)],
            &[("$one", 1)],
        );
        assert_eq!(search.index_rows(&second, false).unwrap(), 1);
        search.commit().unwrap();
        let searcher = search.reader.searcher();
        assert_eq!(
            searcher.num_docs(),
            1,
            "$two removed, $one replaced by its edit"
        );
        let text = |word: &str| {
            let q = tantivy::query::TermQuery::new(
                Term::from_field_text(search.fields.text, word),
                tantivy::schema::IndexRecordOption::Basic,
            );
            searcher.search(&q, &tantivy::collector::Count).unwrap()
        };
        assert_eq!(text("edited"), 1);
        assert_eq!(text("first"), 0);
        assert_eq!(text("second"), 0);
    }
}
