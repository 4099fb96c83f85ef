//! The notes database: SQLite behind a `blocking_first::pool::Pool`, and every query the
//! handlers run.
//!
//! Everything here is plain blocking code. The handlers call it from the blocking parts of their
//! bodies, take a connection just for the statements that need it and give it back before any
//! `io!` or `.await` (holding one across them does not compile). The pool has as many
//! connections as the [`DB`] cap has slots, so no body ever waits for a connection.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use blocking_first::limit::Limit;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

/// The cap on database work: at most this many bodies (and `parallel!` branches) in blocking
/// code at once, and as many pooled connections. `--cap` changes it at start-up, before the pool
/// is built.
pub static DB: Limit = Limit::new("db", 4);

/// The connection pool, sized by [`DB`].
pub type Pool = blocking_first::pool::Pool<SqliteConnectionManager>;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS notes (
        id         INTEGER PRIMARY KEY,
        title      TEXT NOT NULL,
        body       TEXT NOT NULL,
        link       TEXT,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    CREATE TABLE IF NOT EXISTS note_tags (
        note_id INTEGER NOT NULL REFERENCES notes(id) ON DELETE CASCADE,
        tag     TEXT NOT NULL,
        PRIMARY KEY (note_id, tag)
    );
    CREATE INDEX IF NOT EXISTS note_tags_by_tag ON note_tags(tag);
    CREATE TABLE IF NOT EXISTS attachments (
        note_id INTEGER NOT NULL REFERENCES notes(id) ON DELETE CASCADE,
        name    TEXT NOT NULL,
        content BLOB NOT NULL,
        PRIMARY KEY (note_id, name)
    );
    CREATE TABLE IF NOT EXISTS previews (
        note_id    INTEGER PRIMARY KEY REFERENCES notes(id) ON DELETE CASCADE,
        link       TEXT NOT NULL,
        title      TEXT NOT NULL,
        fetched_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
";

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// A stored note.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub id: i64,
    pub title: String,
    pub body: String,
    pub link: Option<String>,
    pub tags: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A note as written by a client, already validated.
#[derive(Debug, Clone)]
pub struct NoteFields {
    pub title: String,
    pub body: String,
    pub link: Option<String>,
    pub tags: Vec<String>,
}

/// An attachment's name and size (its content is only sent by the download endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentInfo {
    pub name: String,
    pub size: i64,
}

/// Counts for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub notes: i64,
    pub distinct_tags: i64,
    pub attachments: i64,
    pub attachment_bytes: i64,
    pub previews: i64,
}

/// A tag and how many notes carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagCount {
    pub tag: String,
    pub notes: i64,
}

/// What can go wrong in here.
#[derive(Debug)]
pub enum DbError {
    /// No connection came free in time.
    Pool(r2d2::Error),
    /// The input broke a rule the schema enforces (a tag given twice); the transaction was
    /// rolled back.
    Rejected(String),
    /// Anything else SQLite reported.
    Sqlite(rusqlite::Error),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Pool(err) => write!(f, "no database connection available: {err}"),
            DbError::Rejected(reason) => f.write_str(reason),
            DbError::Sqlite(err) => write!(f, "database error: {err}"),
        }
    }
}

impl std::error::Error for DbError {}

impl From<r2d2::Error> for DbError {
    fn from(err: r2d2::Error) -> Self {
        DbError::Pool(err)
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(err: rusqlite::Error) -> Self {
        DbError::Sqlite(err)
    }
}

/// Opens (creating if needed) the database at `path` with a pool of as many connections as the
/// [`DB`] cap has slots, creates the schema and, if there are no notes yet, a few to start with.
pub fn open(path: &Path) -> Result<Pool, Box<dyn std::error::Error + Send + Sync>> {
    let manager = SqliteConnectionManager::file(path).with_init(|conn| {
        // WAL lets readers run beside a writer; the busy timeout makes writers queue up
        // instead of failing when another connection holds the write lock.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;",
        )
    });
    let settings = r2d2::Pool::builder()
        .min_idle(Some(0))
        .connection_timeout(Duration::from_secs(5));
    let pool = Pool::with_builder(&DB, settings, manager)?;
    let mut conn = pool.get()?;
    conn.execute_batch(SCHEMA)?;
    seed(&mut conn)?;
    drop(conn);
    Ok(pool)
}

fn seed(conn: &mut Connection) -> Result<(), DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let notes: i64 = tx.query_row("SELECT count(*) FROM notes", [], |row| row.get(0))?;
    if notes > 0 {
        return Ok(());
    }
    let seeds = [
        (
            "Read the tokio tutorial",
            "Especially the part about blocking code.",
            Some("https://tokio.rs/tokio/tutorial"),
            &["rust", "async"][..],
        ),
        (
            "Try axum extractors",
            "State, Path, Json and a raw Body.",
            Some("https://docs.rs/axum/latest/axum/extract/"),
            &["rust", "web"][..],
        ),
        (
            "Turn on WAL mode",
            "Readers no longer wait for the writer.",
            Some("https://www.sqlite.org/wal.html"),
            &["database"][..],
        ),
        ("Buy coffee beans", "", None, &["errands"][..]),
    ];
    for (title, body, link, tags) in seeds {
        let fields = NoteFields {
            title: title.into(),
            body: body.into(),
            link: link.map(Into::into),
            tags: tags.iter().map(|tag| tag.to_string()).collect(),
        };
        insert_note(&tx, &fields)?;
    }
    tx.commit()?;
    Ok(())
}

/// The notes, most recently updated first, optionally only those carrying `tag`.
pub fn list_notes(conn: &Connection, tag: Option<&str>, limit: u32) -> Result<Vec<Note>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM notes
         WHERE ?1 IS NULL OR id IN (SELECT note_id FROM note_tags WHERE tag = ?1)
         ORDER BY updated_at DESC, id DESC LIMIT ?2",
    )?;
    let ids = stmt
        .query_map(params![tag, limit], |row| row.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut notes = Vec::with_capacity(ids.len());
    for id in ids {
        notes.extend(get_note(conn, id)?);
    }
    Ok(notes)
}

/// One row of `GET /notes/export.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRow {
    pub id: i64,
    pub title: String,
    /// Its tags, joined with `;`.
    pub tags: String,
    pub updated_at: String,
}

impl ExportRow {
    /// The row as a CSV line: text fields quoted, quotes doubled.
    pub fn to_csv(&self) -> String {
        let quoted = |text: &str| format!("\"{}\"", text.replace('"', "\"\""));
        format!(
            "{},{},{},{}\n",
            self.id,
            quoted(&self.title),
            quoted(&self.tags),
            self.updated_at
        )
    }
}

/// Hands every note to `row` as an [`ExportRow`], in id order, one at a time; stops at the
/// first error `row` returns (a cancellation, say) without reading further.
pub fn for_each_export_row<E: From<DbError>>(
    conn: &Connection,
    mut row: impl FnMut(ExportRow) -> Result<(), E>,
) -> Result<(), E> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, title, updated_at,
                    (SELECT COALESCE(group_concat(tag, ';'), '') FROM
                       (SELECT tag FROM note_tags WHERE note_id = notes.id ORDER BY tag))
             FROM notes ORDER BY id",
        )
        .map_err(DbError::from)?;
    let mut rows = stmt.query([]).map_err(DbError::from)?;
    while let Some(found) = rows.next().map_err(DbError::from)? {
        let read = |found: &rusqlite::Row<'_>| -> rusqlite::Result<ExportRow> {
            Ok(ExportRow {
                id: found.get(0)?,
                title: found.get(1)?,
                updated_at: found.get(2)?,
                tags: found.get(3)?,
            })
        };
        row(read(found).map_err(DbError::from)?)?;
    }
    Ok(())
}

/// One note with its tags, or `None` if there is no such note.
pub fn get_note(conn: &Connection, id: i64) -> Result<Option<Note>, DbError> {
    let note = conn
        .prepare_cached(
            "SELECT id, title, body, link, created_at, updated_at FROM notes WHERE id = ?1",
        )?
        .query_row([id], |row| {
            Ok(Note {
                id: row.get(0)?,
                title: row.get(1)?,
                body: row.get(2)?,
                link: row.get(3)?,
                tags: Vec::new(),
                created_at: row.get(4)?,
                updated_at: row.get(5)?,
            })
        })
        .optional()?;
    let Some(mut note) = note else {
        return Ok(None);
    };
    note.tags = conn
        .prepare_cached("SELECT tag FROM note_tags WHERE note_id = ?1 ORDER BY tag")?
        .query_map([id], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(Some(note))
}

/// Whether a note with this id exists.
pub fn note_exists(conn: &Connection, id: i64) -> Result<bool, DbError> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM notes WHERE id = ?1")?;
    Ok(stmt.exists([id])?)
}

/// Writes a note and its tags in one transaction: all of it or nothing.
pub fn create_note(conn: &mut Connection, fields: &NoteFields) -> Result<Note, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id = insert_note(&tx, fields)?;
    let note = get_note(&tx, id)?.expect("inserted in this transaction");
    tx.commit()?;
    Ok(note)
}

fn insert_note(tx: &Transaction<'_>, fields: &NoteFields) -> Result<i64, DbError> {
    tx.prepare_cached("INSERT INTO notes (title, body, link) VALUES (?1, ?2, ?3)")?
        .execute(params![fields.title, fields.body, fields.link])?;
    let id = tx.last_insert_rowid();
    insert_tags(tx, id, &fields.tags)?;
    Ok(id)
}

/// Inserts the tags one row at a time. A tag given twice is left to the primary key of
/// `note_tags`: it fails the insert midway, and the caller's transaction then takes back every
/// row written before it, the note's included.
fn insert_tags(tx: &Transaction<'_>, id: i64, tags: &[String]) -> Result<(), DbError> {
    let mut stmt = tx.prepare_cached("INSERT INTO note_tags (note_id, tag) VALUES (?1, ?2)")?;
    for tag in tags {
        match stmt.execute(params![id, tag]) {
            Ok(_) => {}
            Err(err) if is_primary_key_violation(&err) => {
                return Err(DbError::Rejected(format!(
                    "tag `{tag}` is given more than once"
                )));
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

fn is_primary_key_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// Replaces a note's fields and tags in one transaction; `None` if there is no such note.
/// A cached preview of a link the note no longer has is dropped.
pub fn update_note(
    conn: &mut Connection,
    id: i64,
    fields: &NoteFields,
) -> Result<Option<Note>, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let updated = tx.execute(
        &format!(
            "UPDATE notes SET title = ?2, body = ?3, link = ?4, updated_at = {NOW} WHERE id = ?1"
        ),
        params![id, fields.title, fields.body, fields.link],
    )?;
    if updated == 0 {
        return Ok(None);
    }
    tx.execute("DELETE FROM note_tags WHERE note_id = ?1", [id])?;
    insert_tags(&tx, id, &fields.tags)?;
    tx.execute(
        "DELETE FROM previews WHERE note_id = ?1 AND link IS NOT ?2",
        params![id, fields.link],
    )?;
    let note = get_note(&tx, id)?;
    tx.commit()?;
    Ok(note)
}

/// Deletes a note with its tags, attachments and preview; `false` if there was no such note.
pub fn delete_note(conn: &Connection, id: i64) -> Result<bool, DbError> {
    // One statement: the cascades run inside it, so it is all or nothing without a transaction.
    Ok(conn.execute("DELETE FROM notes WHERE id = ?1", [id])? > 0)
}

/// Remembers the last preview fetched for a note; `false` if the note was deleted meanwhile.
pub fn save_preview(conn: &Connection, id: i64, link: &str, title: &str) -> Result<bool, DbError> {
    let saved = conn.execute(
        "INSERT OR REPLACE INTO previews (note_id, link, title)
         SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM notes WHERE id = ?1)",
        params![id, link, title],
    )?;
    Ok(saved > 0)
}

/// The attachments of a note, by name.
pub fn attachments(conn: &Connection, id: i64) -> Result<Vec<AttachmentInfo>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, length(content) FROM attachments WHERE note_id = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map([id], |row| {
        Ok(AttachmentInfo {
            name: row.get(0)?,
            size: row.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Stores (or replaces) an attachment and marks the note updated, in one transaction;
/// `false` if there is no such note.
pub fn store_attachment(
    conn: &mut Connection,
    id: i64,
    name: &str,
    content: &[u8],
) -> Result<bool, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let touched = tx.execute(
        &format!("UPDATE notes SET updated_at = {NOW} WHERE id = ?1"),
        [id],
    )?;
    if touched == 0 {
        return Ok(false);
    }
    tx.execute(
        "INSERT OR REPLACE INTO attachments (note_id, name, content) VALUES (?1, ?2, ?3)",
        params![id, name, content],
    )?;
    tx.commit()?;
    Ok(true)
}

/// An attachment's content, or `None` if the note has no attachment of that name.
pub fn attachment_content(
    conn: &Connection,
    id: i64,
    name: &str,
) -> Result<Option<Vec<u8>>, DbError> {
    let mut stmt =
        conn.prepare_cached("SELECT content FROM attachments WHERE note_id = ?1 AND name = ?2")?;
    Ok(stmt
        .query_row(params![id, name], |row| row.get(0))
        .optional()?)
}

/// How many notes, tags, attachments and previews there are.
pub fn totals(conn: &Connection) -> Result<Totals, DbError> {
    Ok(conn.query_row(
        "SELECT (SELECT count(*) FROM notes),
                (SELECT count(DISTINCT tag) FROM note_tags),
                (SELECT count(*) FROM attachments),
                (SELECT coalesce(sum(length(content)), 0) FROM attachments),
                (SELECT count(*) FROM previews)",
        [],
        |row| {
            Ok(Totals {
                notes: row.get(0)?,
                distinct_tags: row.get(1)?,
                attachments: row.get(2)?,
                attachment_bytes: row.get(3)?,
                previews: row.get(4)?,
            })
        },
    )?)
}

/// The `limit` tags carried by the most notes.
pub fn top_tags(conn: &Connection, limit: u32) -> Result<Vec<TagCount>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT tag, count(*) AS notes FROM note_tags
         GROUP BY tag ORDER BY notes DESC, tag LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |row| {
        Ok(TagCount {
            tag: row.get(0)?,
            notes: row.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The `limit` most recently updated notes.
pub fn recent_notes(conn: &Connection, limit: u32) -> Result<Vec<Note>, DbError> {
    list_notes(conn, None, limit)
}
