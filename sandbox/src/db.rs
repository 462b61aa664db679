//! The SQLite database: connection settings, the schema (embedded SQL run in
//! order at start, recorded in `schema_migrations`) and write transactions.
//!
//! Durability: WAL with `synchronous=FULL`, so a committed transaction is on
//! disk before `COMMIT` returns and survives the process aborting right
//! after (the crash fault relies on this).
//!
//! Every customer-visible table is keyed by `(customer_id, id)`: each
//! customer sees the same ids (`acc-current`), and one customer's id never
//! reaches another's rows.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

/// Schema migrations, applied in order; never edit a released one, append.
const MIGRATIONS: &[(i64, &str)] = &[(1, SCHEMA_V1)];

const SCHEMA_V1: &str = r#"
CREATE TABLE customers (
    customer_id   TEXT PRIMARY KEY,
    enrolled_on   TEXT NOT NULL,
    mobile_number TEXT NOT NULL,
    email_address TEXT
) STRICT;

CREATE TABLE accounts (
    customer_id TEXT NOT NULL REFERENCES customers (customer_id),
    account_id  TEXT NOT NULL,
    position    INTEGER NOT NULL,
    nickname    TEXT NOT NULL,
    sub_type    TEXT NOT NULL,
    currency    TEXT NOT NULL,
    aliases     TEXT NOT NULL,  -- JSON array of strings
    PRIMARY KEY (customer_id, account_id)
) STRICT;

-- One business event of the ledger; its postings sum to zero per currency.
CREATE TABLE entries (
    customer_id     TEXT NOT NULL REFERENCES customers (customer_id),
    entry_id        TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('opening', 'seed', 'payment')),
    idempotency_key TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (customer_id, entry_id),
    CHECK ((kind = 'payment') = (idempotency_key IS NOT NULL))
) STRICT;

-- At most one ledger entry per payment idempotency key, whatever the code does.
CREATE UNIQUE INDEX entries_one_per_payment_key
    ON entries (customer_id, idempotency_key) WHERE kind = 'payment';

-- Balances are SUM(amount_minor) over an account's postings, never stored.
-- `account_id` is a customer account (`acc-current`) or a bank-internal one
-- (`bank:equity`, `bank:clearing`). `seq` orders postings of the same day.
CREATE TABLE postings (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id  TEXT NOT NULL,
    posting_id   TEXT NOT NULL,
    entry_id     TEXT NOT NULL,
    account_id   TEXT NOT NULL,
    amount_minor INTEGER NOT NULL CHECK (amount_minor <> 0),
    currency     TEXT NOT NULL,
    booking_date TEXT NOT NULL,
    description  TEXT NOT NULL,
    UNIQUE (customer_id, posting_id),
    FOREIGN KEY (customer_id, entry_id) REFERENCES entries (customer_id, entry_id)
) STRICT;

CREATE INDEX postings_by_account ON postings (customer_id, account_id, booking_date, seq);
CREATE INDEX postings_by_entry ON postings (customer_id, entry_id);

CREATE TABLE payees (
    customer_id    TEXT NOT NULL REFERENCES customers (customer_id),
    payee_id       TEXT NOT NULL,
    position       INTEGER NOT NULL,
    name           TEXT NOT NULL,
    aliases        TEXT NOT NULL,
    sort_code      TEXT,
    account_number TEXT,
    iban           TEXT,
    PRIMARY KEY (customer_id, payee_id)
) STRICT;

CREATE TABLE payments (
    customer_id                TEXT NOT NULL,
    payment_id                 TEXT NOT NULL,
    idempotency_key            TEXT NOT NULL,
    entry_id                   TEXT NOT NULL,
    account_id                 TEXT NOT NULL,
    payee_id                   TEXT NOT NULL,
    amount_minor               INTEGER NOT NULL CHECK (amount_minor > 0),
    currency                   TEXT NOT NULL,
    instruction_identification TEXT NOT NULL,
    reference                  TEXT,
    status                     TEXT NOT NULL,
    created_at                 TEXT NOT NULL,
    PRIMARY KEY (customer_id, payment_id),
    UNIQUE (customer_id, idempotency_key),
    UNIQUE (customer_id, entry_id),
    FOREIGN KEY (customer_id, entry_id) REFERENCES entries (customer_id, entry_id)
) STRICT;

-- Settled answers of keyed writes: same key and same request hash replay
-- `status` and `body`; same key and another hash is a ConsentMismatch.
CREATE TABLE idempotency (
    customer_id     TEXT NOT NULL,
    operation       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    status          INTEGER NOT NULL,
    body            TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (customer_id, operation, idempotency_key)
) STRICT;

CREATE TABLE cards (
    customer_id   TEXT NOT NULL REFERENCES customers (customer_id),
    card_id       TEXT NOT NULL,
    position      INTEGER NOT NULL,
    name          TEXT NOT NULL,
    last4         TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('Active', 'Frozen', 'Blocked', 'InTransit')),
    dispatched_on TEXT,
    replaces      TEXT,
    PRIMARY KEY (customer_id, card_id)
) STRICT;

CREATE TABLE disputes (
    customer_id TEXT NOT NULL,
    dispute_id  TEXT NOT NULL,
    posting_id  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (customer_id, dispute_id),
    FOREIGN KEY (customer_id, posting_id) REFERENCES postings (customer_id, posting_id)
) STRICT;

CREATE TABLE one_time_codes (
    customer_id   TEXT NOT NULL,
    code_id       TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    binding       TEXT NOT NULL,
    code          TEXT NOT NULL,
    expires_at    INTEGER NOT NULL,  -- Unix seconds
    attempts_left INTEGER NOT NULL CHECK (attempts_left >= 0),
    used          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, code_id)
) STRICT;

-- The "SMS" the bank sent; tests and demos read the latest code from here.
CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    code_id     TEXT NOT NULL,
    code        TEXT NOT NULL,
    sent_at     TEXT NOT NULL
) STRICT;
CREATE INDEX outbox_by_customer ON outbox (customer_id, seq);
"#;

/// The database and its single in-process writer.
///
/// Writes are serialised twice: by `writer` (so concurrent requests queue in
/// FIFO order instead of polling SQLite's busy handler) and by `BEGIN
/// IMMEDIATE` (so a second process on the same file cannot interleave a
/// read-then-write transaction). Reads go straight to the pool: WAL lets
/// them run beside the writer on a committed snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    pub(crate) pool: SqlitePool,
    writer: Arc<Mutex<()>>,
}

/// An open write transaction. Dropping it without [`WriteTx::commit`] rolls
/// back; the writer lock is released after the transaction ends.
#[derive(Debug)]
pub(crate) struct WriteTx {
    // Field order matters: the transaction is dropped (rolled back) before
    // the lock is released.
    tx: Transaction<'static, Sqlite>,
    _writer: OwnedMutexGuard<()>,
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl Store {
    /// Opens (creating if missing) and migrates the database at `path`.
    pub(crate) async fn open(path: &Path) -> anyhow::Result<Store> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        let store = Store {
            pool,
            writer: Arc::new(Mutex::new(())),
        };
        store
            .migrate()
            .await
            .with_context(|| format!("cannot migrate the database {}", path.display()))?;
        Ok(store)
    }

    /// Starts a write transaction, waiting for earlier writers.
    pub(crate) async fn write(&self) -> Result<WriteTx, sqlx::Error> {
        let guard = Arc::clone(&self.writer).lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, _writer: guard })
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let mut w = self.write().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    INTEGER PRIMARY KEY,
                 applied_at TEXT NOT NULL
             ) STRICT",
        )
        .execute(&mut *w)
        .await?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut *w)
                .await?;
        let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
        anyhow::ensure!(
            current <= latest,
            "the database has schema version {current}, newer than this sandbox-bank knows ({latest})"
        );
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            sqlx::raw_sql(sql).execute(&mut *w).await?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
                .bind(version)
                .bind(crate::clock::rfc3339(crate::clock::now_unix()))
                .execute(&mut *w)
                .await?;
        }
        w.commit().await?;
        Ok(())
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}
