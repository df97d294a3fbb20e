//! Full-text search over room messages, names and topics (tantivy).
//!
//! Events are indexed as they are stored: an edit (`m.replace`) replaces the
//! text of the event it edits, a redaction removes the event. The index lives
//! in `<data_dir>/search`; if it cannot be opened (lost or corrupt) it is
//! created anew and rebuilt from the events table at start.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde_json::Value;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, QueryParser, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TEXT, Value as _,
};
use tantivy::{Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term, doc};

use crate::error::{MatrixError, Result};
use crate::services::rooms::Pdu;

/// Memory for the index writer (tantivy's minimum per thread).
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
    writer: Mutex<IndexWriter<TantivyDocument>>,
    fields: Fields,
    dirty: AtomicBool,
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
    let event_id = b.add_text_field("event_id", STRING | STORED);
    let room_id = b.add_text_field("room_id", STRING | STORED);
    let key = b.add_text_field("key", STRING);
    let text = b.add_text_field("text", TEXT);
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

/// What an event contributes to the index: (key, text), or nothing.
pub fn searchable(pdu: &Pdu) -> Option<(&'static str, String)> {
    let content = pdu.content_value();
    let (key, field) = match pdu.kind.to_string().as_str() {
        "m.room.message" => ("content.body", "body"),
        "m.room.name" if pdu.state_key.as_deref() == Some("") => ("content.name", "name"),
        "m.room.topic" if pdu.state_key.as_deref() == Some("") => ("content.topic", "topic"),
        _ => return None,
    };
    content
        .get(field)
        .and_then(Value::as_str)
        .map(|t| (key, t.to_owned()))
}

/// For an edit: the event it replaces and the new body.
pub fn edit_of(pdu: &Pdu) -> Option<(String, String)> {
    let content = pdu.content_value();
    let rel = content.get("m.relates_to")?;
    if rel.get("rel_type").and_then(Value::as_str) != Some("m.replace") {
        return None;
    }
    let target = rel.get("event_id")?.as_str()?.to_owned();
    let body = content
        .get("m.new_content")?
        .get("body")?
        .as_str()?
        .to_owned();
    Some((target, body))
}

impl Search {
    /// Opens the index in `dir`, or creates it; the bool says whether it was
    /// created (and so needs rebuilding from the events).
    pub fn open(dir: &Path) -> anyhow::Result<(Self, bool)> {
        match Self::try_open(dir) {
            Ok(s) => Ok(s),
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "search index unusable; recreating it");
                let _ = std::fs::remove_dir_all(dir);
                let (s, _) = Self::try_open(dir)?;
                Ok((s, true))
            }
        }
    }

    fn try_open(dir: &Path) -> anyhow::Result<(Self, bool)> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema();
        let created = !dir.join("meta.json").exists();
        let directory = tantivy::directory::MmapDirectory::open(dir)?;
        let index = Index::open_or_create(directory, schema)?;
        let writer = index.writer_with_num_threads(1, WRITER_BUDGET)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok((
            Self {
                index,
                reader,
                writer: Mutex::new(writer),
                fields,
                dirty: AtomicBool::new(false),
            },
            created,
        ))
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

    /// Indexes a newly stored event (or applies its edit or redaction).
    pub fn on_event(&self, pdu: &Pdu) -> Result<()> {
        let writer = self.writer.lock();
        let f = self.fields;
        if let Some(target) = &pdu.redacts {
            writer.delete_term(Term::from_field_text(f.event_id, target.as_str()));
        } else if let Some((target, body)) = edit_of(pdu) {
            writer.delete_term(Term::from_field_text(f.event_id, &target));
            self.add(
                &writer,
                &target,
                pdu.room_id.as_str(),
                "content.body",
                &body,
                pdu.stream_ordering,
            )?;
        } else if let Some((key, text)) = searchable(pdu) {
            self.add(
                &writer,
                pdu.event_id.as_str(),
                pdu.room_id.as_str(),
                key,
                &text,
                pdu.stream_ordering,
            )?;
        } else {
            return Ok(());
        }
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Removes everything of a room (after a purge).
    pub fn delete_room(&self, room_id: &str) -> Result<()> {
        self.writer
            .lock()
            .delete_term(Term::from_field_text(self.fields.room_id, room_id));
        self.dirty.store(true, Ordering::Release);
        self.commit()
    }

    /// Removes single events (after a history purge).
    pub fn delete_events(&self, event_ids: &[String]) -> Result<()> {
        {
            let writer = self.writer.lock();
            for id in event_ids {
                writer.delete_term(Term::from_field_text(self.fields.event_id, id));
            }
        }
        self.dirty.store(true, Ordering::Release);
        self.commit()
    }

    /// Makes pending changes searchable.
    pub fn commit(&self) -> Result<()> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            self.writer.lock().commit().map_err(MatrixError::internal)?;
            self.reader.reload().map_err(MatrixError::internal)?;
        }
        Ok(())
    }

    /// Empties the index (the first step of a rebuild).
    pub fn clear(&self) -> Result<()> {
        self.writer
            .lock()
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
        let mut parser = QueryParser::for_index(&self.index, vec![f.text]);
        parser.set_conjunction_by_default();
        let (text_query, _) = parser.parse_query_lenient(q.term);
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
pub async fn reindex(s: &crate::services::Services, job: Option<&str>) -> Result<u64> {
    let search = s
        .search
        .as_ref()
        .ok_or_else(|| MatrixError::unknown(http::StatusCode::BAD_REQUEST, "Search is disabled"))?;
    let started = std::time::Instant::now();
    search.clear()?;
    let (mut after, mut count) = (0i64, 0u64);
    loop {
        let rows = s.storage.searchable_events_after(after, 10_000).await?;
        if rows.is_empty() {
            break;
        }
        let batch = rows.len() as u64;
        for row in rows {
            after = row.stream_ordering;
            let pdu = crate::services::rooms::row_to_pdu(row)?;
            search.on_event(&pdu)?;
            count += 1;
            if count % 10_000 == 0 {
                tracing::info!(count, elapsed = ?started.elapsed(), "reindexing: events indexed so far");
            }
        }
        if let Some(job) = job {
            s.jobs.progress(job, batch);
        }
    }
    search.commit()?;
    tracing::info!("Indexed {count} events in {:?}", started.elapsed());
    Ok(count)
}
