//! The bank's operations, between the HTTP layer (which parses headers and
//! bodies) and the tables. Reads go to the pool; every write is one
//! transaction, and keyed writes follow the same shape:
//!
//! ```text
//! lock + BEGIN IMMEDIATE → stored answer? replay it → effect → store the
//! answer if final → COMMIT
//! ```
//!
//! so an effect and the answer kept under its key commit together.

use axum::http::StatusCode;
use bankbot_connectors::wire::{
    self, Amount, Balance, BalanceType, Balances, Card, CardStatus, Cards, CodeCheck, CodeRequest,
    CodeSent, CodeVerdict, ContactChange, CreditDebit, Dispute, DisputeRequest, DomesticPayment,
    Envelope, Links, Payee, Payees, PaymentRequest, PaymentStatus, Transaction, TransactionPage,
    Transactions, amount_to_minor, codes, minor_to_amount,
};
use rand::Rng as _;
use sqlx::SqliteConnection;
use uuid::Uuid;

use crate::clock::{self, Day};
use crate::db::Store;
use crate::error::{ApiError, Reply};
use crate::idempotency::{self, Keyed};
use crate::ids::{CustomerId, IdempotencyKey};
use crate::ledger::{self, CLEARING, Cursor, Entry, EntryKind, Leg};

/// The most one payment may move, in major units of its currency.
const PAYMENT_LIMIT: &str = "10000";
/// A one-time code is valid this long after it is sent.
const CODE_TTL_SECS: i64 = 300;
/// Wrong tries a one-time code survives.
const CODE_ATTEMPTS: i64 = 3;
/// Page size of the transactions listing when the client names none.
const DEFAULT_PAGE_SIZE: i64 = 25;
const MAX_PAGE_SIZE: i64 = 100;

fn short_id(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::new_v4().simple())
}

fn parse_aliases(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

// ---------------------------------------------------------------- reads

pub(crate) async fn accounts(
    store: &Store,
    customer: &CustomerId,
) -> Result<Vec<wire::Account>, ApiError> {
    let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT account_id, currency, nickname, sub_type, aliases FROM accounts
         WHERE customer_id = ? ORDER BY position",
    )
    .bind(customer.as_str())
    .fetch_all(&store.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, currency, nickname, sub_type, aliases)| wire::Account {
                account_id: id,
                currency,
                nickname,
                account_sub_type: Some(sub_type),
                aliases: parse_aliases(&aliases),
            },
        )
        .collect())
}

/// The currency of the customer's account, or 404 (also for another
/// customer's account).
async fn account_currency(
    conn: &mut SqliteConnection,
    customer: &CustomerId,
    account_id: &str,
) -> Result<String, ApiError> {
    let currency: Option<String> = sqlx::query_scalar(
        "SELECT currency FROM accounts WHERE customer_id = ? AND account_id = ?",
    )
    .bind(customer.as_str())
    .bind(account_id)
    .fetch_optional(conn)
    .await?;
    currency.ok_or_else(|| ApiError::not_found(format!("there is no account `{account_id}`")))
}

pub(crate) async fn balances(
    store: &Store,
    customer: &CustomerId,
    account_id: &str,
) -> Result<Balances, ApiError> {
    let mut conn = store.pool.acquire().await?;
    let currency = account_currency(&mut conn, customer, account_id).await?;
    let minor = ledger::balance(&mut conn, customer, account_id).await?;
    let balance = |kind| Balance {
        kind,
        amount: Amount {
            amount: minor_to_amount(minor.saturating_abs(), &currency),
            currency: currency.clone(),
        },
        credit_debit_indicator: if minor < 0 {
            CreditDebit::Debit
        } else {
            CreditDebit::Credit
        },
    };
    // No holds or pending items: available equals booked.
    Ok(Balances {
        balance: vec![
            balance(BalanceType::InterimBooked),
            balance(BalanceType::InterimAvailable),
        ],
    })
}

/// The raw query string of the transactions listing.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct TransactionQuery {
    #[serde(rename = "fromBookingDate")]
    pub(crate) from: Option<String>,
    #[serde(rename = "toBookingDate")]
    pub(crate) to: Option<String>,
    pub(crate) page: Option<String>,
    #[serde(rename = "pageSize")]
    pub(crate) page_size: Option<String>,
}

fn query_day(value: Option<&str>, name: &'static str) -> Result<Day, ApiError> {
    let value =
        value.ok_or_else(|| ApiError::invalid(format!("`{name}` is required (YYYY-MM-DD)")))?;
    Day::parse(value).ok_or_else(|| {
        ApiError::invalid(format!("`{name}` must be a YYYY-MM-DD date, got `{value}`"))
    })
}

pub(crate) async fn transactions(
    store: &Store,
    customer: &CustomerId,
    account_id: &str,
    q: &TransactionQuery,
) -> Result<TransactionPage, ApiError> {
    let from = query_day(q.from.as_deref(), "fromBookingDate")?;
    let to = query_day(q.to.as_deref(), "toBookingDate")?;
    if from > to {
        return Err(ApiError::invalid(
            "`fromBookingDate` must not be after `toBookingDate`",
        ));
    }
    let limit = match q.page_size.as_deref() {
        None => DEFAULT_PAGE_SIZE,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "`pageSize` must be an integer from 1 to {MAX_PAGE_SIZE}, got `{s}`"
                ))
            })?,
    };
    let cursor = match q.page.as_deref() {
        None => None,
        Some(token) => Some(
            Some(token)
                .filter(|t| t.len() <= 256)
                .and_then(Cursor::parse)
                .ok_or_else(|| {
                    ApiError::invalid("`page` is not a `Links.Next` token of this listing")
                })?,
        ),
    };
    {
        let mut conn = store.pool.acquire().await?;
        account_currency(&mut conn, customer, account_id).await?;
    }
    let mut rows = ledger::postings(
        &store.pool,
        customer,
        account_id,
        from,
        to,
        cursor.as_ref(),
        limit + 1,
    )
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = match rows.last() {
        Some(last) if more => Day::parse(&last.booking_date).map(|booking_date| {
            Cursor {
                booking_date,
                seq: last.seq,
            }
            .token()
        }),
        _ => None,
    };
    let transaction = rows
        .into_iter()
        .map(|p| Transaction {
            transaction_id: p.posting_id,
            booking_date: p.booking_date,
            amount: Amount {
                amount: minor_to_amount(p.amount_minor.saturating_abs(), &p.currency),
                currency: p.currency,
            },
            credit_debit_indicator: if p.amount_minor < 0 {
                CreditDebit::Debit
            } else {
                CreditDebit::Credit
            },
            transaction_information: p.description,
        })
        .collect();
    Ok(TransactionPage {
        data: Transactions { transaction },
        links: Links { next },
    })
}

pub(crate) async fn payees(store: &Store, customer: &CustomerId) -> Result<Payees, ApiError> {
    type Row = (
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT payee_id, name, aliases, sort_code, account_number, iban FROM payees
         WHERE customer_id = ? ORDER BY position",
    )
    .bind(customer.as_str())
    .fetch_all(&store.pool)
    .await?;
    Ok(Payees {
        payee: rows
            .into_iter()
            .map(
                |(payee_id, name, aliases, sort_code, account_number, iban)| Payee {
                    payee_id,
                    name,
                    aliases: parse_aliases(&aliases),
                    sort_code,
                    account_number,
                    iban,
                },
            )
            .collect(),
    })
}

#[derive(Debug, sqlx::FromRow)]
struct CardRow {
    card_id: String,
    name: String,
    last4: String,
    status: String,
    dispatched_on: Option<String>,
}

fn card_status_name(status: CardStatus) -> &'static str {
    match status {
        CardStatus::Active => "Active",
        CardStatus::Frozen => "Frozen",
        CardStatus::Blocked => "Blocked",
        CardStatus::InTransit => "InTransit",
    }
}

fn parse_card_status(s: &str) -> Result<CardStatus, ApiError> {
    match s {
        "Active" => Ok(CardStatus::Active),
        "Frozen" => Ok(CardStatus::Frozen),
        "Blocked" => Ok(CardStatus::Blocked),
        "InTransit" => Ok(CardStatus::InTransit),
        other => Err(ApiError::internal(format!(
            "a card has the unknown status `{other}`"
        ))),
    }
}

impl CardRow {
    fn into_wire(self) -> Result<Card, ApiError> {
        Ok(Card {
            status: parse_card_status(&self.status)?,
            card_id: self.card_id,
            name: self.name,
            last4: self.last4,
            dispatched_on: self.dispatched_on,
        })
    }
}

pub(crate) async fn cards(store: &Store, customer: &CustomerId) -> Result<Cards, ApiError> {
    let rows: Vec<CardRow> = sqlx::query_as(
        "SELECT card_id, name, last4, status, dispatched_on FROM cards
         WHERE customer_id = ? ORDER BY position",
    )
    .bind(customer.as_str())
    .fetch_all(&store.pool)
    .await?;
    Ok(Cards {
        card: rows
            .into_iter()
            .map(CardRow::into_wire)
            .collect::<Result<_, _>>()?,
    })
}

async fn card(
    conn: &mut SqliteConnection,
    customer: &CustomerId,
    card_id: &str,
) -> Result<CardRow, ApiError> {
    let row: Option<CardRow> = sqlx::query_as(
        "SELECT card_id, name, last4, status, dispatched_on FROM cards
         WHERE customer_id = ? AND card_id = ?",
    )
    .bind(customer.as_str())
    .bind(card_id)
    .fetch_optional(conn)
    .await?;
    row.ok_or_else(|| ApiError::not_found(format!("there is no card `{card_id}`")))
}

// ------------------------------------------------------------- payments

fn payment_status(s: &str) -> Result<PaymentStatus, ApiError> {
    match s {
        "Pending" => Ok(PaymentStatus::Pending),
        "AcceptedSettlementInProcess" => Ok(PaymentStatus::AcceptedSettlementInProcess),
        "AcceptedSettlementCompleted" => Ok(PaymentStatus::AcceptedSettlementCompleted),
        "Rejected" => Ok(PaymentStatus::Rejected),
        other => Err(ApiError::internal(format!(
            "a payment has the unknown status `{other}`"
        ))),
    }
}

async fn payment_where(
    store: &Store,
    customer: &CustomerId,
    column: &'static str,
    value: &str,
) -> Result<Option<DomesticPayment>, ApiError> {
    // `column` is one of two literals below, never client input.
    let sql = format!(
        "SELECT payment_id, status, created_at FROM payments WHERE customer_id = ? AND {column} = ?"
    );
    let row: Option<(String, String, String)> = sqlx::query_as(&sql)
        .bind(customer.as_str())
        .bind(value)
        .fetch_optional(&store.pool)
        .await?;
    row.map(|(id, status, created)| {
        Ok(DomesticPayment {
            domestic_payment_id: id,
            status: payment_status(&status)?,
            status_reason: None,
            creation_date_time: created,
        })
    })
    .transpose()
}

pub(crate) async fn payment(
    store: &Store,
    customer: &CustomerId,
    payment_id: &str,
) -> Result<DomesticPayment, ApiError> {
    payment_where(store, customer, "payment_id", payment_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no payment `{payment_id}`")))
}

pub(crate) async fn payment_by_key(
    store: &Store,
    customer: &CustomerId,
    key: &str,
) -> Result<DomesticPayment, ApiError> {
    payment_where(store, customer, "idempotency_key", key)
        .await?
        .ok_or_else(|| ApiError::not_found("no payment was made with this idempotency key"))
}

/// The answer to a payment request, and whether this call booked it (the
/// crash fault aborts only after a fresh commit).
#[derive(Debug)]
pub(crate) struct PaymentOutcome {
    pub(crate) reply: Reply,
    pub(crate) booked_now: bool,
}

/// `POST /domestic-payments`: books the payment once per key.
pub(crate) async fn create_payment(
    store: &Store,
    k: &Keyed,
    request: &PaymentRequest,
) -> Result<PaymentOutcome, ApiError> {
    let mut w = store.write().await?;
    if let Some(reply) = idempotency::prior(&mut w, k).await? {
        return Ok(PaymentOutcome {
            reply,
            booked_now: false,
        });
    }
    let outcome = book_payment(&mut w, &k.customer, &k.key, request).await;
    let reply = idempotency::settle(&mut w, k, outcome).await?;
    w.commit().await?;
    Ok(PaymentOutcome {
        booked_now: reply.status == StatusCode::CREATED,
        reply,
    })
}

/// Validates and books a payment: the payment row and its two postings.
/// Every refusal happens before the first write.
async fn book_payment(
    conn: &mut SqliteConnection,
    customer: &CustomerId,
    key: &IdempotencyKey,
    request: &PaymentRequest,
) -> Result<Reply, ApiError> {
    let init = &request.initiation;
    let instruction = &init.instruction_identification;
    if instruction.is_empty() || instruction.chars().count() > 35 {
        return Err(
            ApiError::invalid("`InstructionIdentification` must be 1 to 35 characters")
                .at("Data.Initiation.InstructionIdentification"),
        );
    }
    if init
        .reference
        .as_ref()
        .is_some_and(|r| r.chars().count() > 18)
    {
        return Err(
            ApiError::invalid("`Reference` must be at most 18 characters")
                .at("Data.Initiation.Reference"),
        );
    }
    let account_id = &init.debtor_account.account_id;
    let account_currency = account_currency(conn, customer, account_id).await?;
    let currency = &init.instructed_amount.currency;
    let minor = amount_to_minor(&init.instructed_amount.amount, currency)
        .map_err(|m| ApiError::invalid(m).at("Data.Initiation.InstructedAmount"))?;
    if minor <= 0 {
        return Err(ApiError::invalid("the amount must be more than zero")
            .at("Data.Initiation.InstructedAmount.Amount"));
    }
    if *currency != account_currency {
        return Err(ApiError::invalid(format!(
            "the account holds {account_currency}; it cannot pay in {currency}"
        ))
        .at("Data.Initiation.InstructedAmount.Currency"));
    }
    let payee: Option<String> =
        sqlx::query_scalar("SELECT name FROM payees WHERE customer_id = ? AND payee_id = ?")
            .bind(customer.as_str())
            .bind(&init.payee_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(payee_name) = payee else {
        return Err(ApiError::refused(
            codes::PAYEE_UNKNOWN,
            format!("`{}` is not one of the customer's payees", init.payee_id),
        ));
    };
    let limit = amount_to_minor(PAYMENT_LIMIT, currency).unwrap_or(i64::MAX);
    if minor > limit {
        return Err(ApiError::refused(
            codes::LIMIT_EXCEEDED,
            format!(
                "a payment may move at most {} {currency}",
                minor_to_amount(limit, currency)
            ),
        ));
    }
    let available = ledger::balance(conn, customer, account_id).await?;
    if available < minor {
        return Err(ApiError::refused(
            codes::INSUFFICIENT_FUNDS,
            format!(
                "the available balance, {} {currency}, is less than {} {currency}",
                minor_to_amount(available, currency),
                minor_to_amount(minor, currency)
            ),
        ));
    }

    let payment_id = short_id("PAY-");
    let created = clock::rfc3339(clock::now_unix());
    let description = match &init.reference {
        Some(r) if !r.is_empty() => format!("Payment to {payee_name}, ref {r}"),
        _ => format!("Payment to {payee_name}"),
    };
    let posting_id = short_id("TX-");
    ledger::post_entry(
        conn,
        customer,
        &Entry {
            entry_id: &payment_id,
            kind: EntryKind::Payment,
            idempotency_key: Some(key),
            booking_date: Day::today(),
            legs: vec![
                Leg {
                    posting_id: posting_id.clone(),
                    account_id,
                    amount_minor: -minor,
                    currency,
                    description: &description,
                },
                Leg {
                    posting_id: format!("{posting_id}/clearing"),
                    account_id: CLEARING,
                    amount_minor: minor,
                    currency,
                    description: &description,
                },
            ],
        },
    )
    .await?;
    sqlx::query(
        "INSERT INTO payments (customer_id, payment_id, idempotency_key, entry_id, account_id,
                               payee_id, amount_minor, currency, instruction_identification,
                               reference, status, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'AcceptedSettlementCompleted', ?)",
    )
    .bind(customer.as_str())
    .bind(&payment_id)
    .bind(key.as_str())
    .bind(&payment_id)
    .bind(account_id)
    .bind(&init.payee_id)
    .bind(minor)
    .bind(currency)
    .bind(instruction)
    .bind(init.reference.as_deref())
    .bind(&created)
    .execute(&mut *conn)
    .await?;
    tracing::info!(
        customer = customer.as_str(),
        payment = %payment_id,
        amount = %minor_to_amount(minor, currency),
        currency = %currency,
        payee = %init.payee_id,
        "sandbox-bank: payment booked"
    );
    Ok(Reply::json(
        StatusCode::CREATED,
        &Envelope {
            data: DomesticPayment {
                domestic_payment_id: payment_id,
                status: PaymentStatus::AcceptedSettlementCompleted,
                status_reason: None,
                creation_date_time: created,
            },
        },
    ))
}

// ---------------------------------------------------------------- cards

/// `PUT /cards/{id}/status`.
pub(crate) async fn change_card_status(
    store: &Store,
    k: &Keyed,
    card_id: &str,
    target: CardStatus,
) -> Result<Reply, ApiError> {
    let mut w = store.write().await?;
    if let Some(reply) = idempotency::prior(&mut w, k).await? {
        return Ok(reply);
    }
    let outcome = set_card_status(&mut w, &k.customer, card_id, target).await;
    let reply = idempotency::settle(&mut w, k, outcome).await?;
    w.commit().await?;
    Ok(reply)
}

/// Blocked is final; setting the current status again changes nothing.
async fn set_card_status(
    conn: &mut SqliteConnection,
    customer: &CustomerId,
    card_id: &str,
    target: CardStatus,
) -> Result<Reply, ApiError> {
    if target == CardStatus::InTransit {
        return Err(
            ApiError::invalid("`Status` must be Blocked, Frozen or Active").at("Data.Status"),
        );
    }
    let mut row = card(conn, customer, card_id).await?;
    let current = parse_card_status(&row.status)?;
    if current == CardStatus::Blocked && target != CardStatus::Blocked {
        return Err(ApiError::refused(
            codes::CARD_BLOCKED,
            format!("card `{card_id}` is blocked for good; order a replacement instead"),
        ));
    }
    if current != target {
        sqlx::query("UPDATE cards SET status = ? WHERE customer_id = ? AND card_id = ?")
            .bind(card_status_name(target))
            .bind(customer.as_str())
            .bind(card_id)
            .execute(&mut *conn)
            .await?;
        row.status = card_status_name(target).to_owned();
        tracing::info!(
            customer = customer.as_str(),
            card = card_id,
            status = card_status_name(target),
            "sandbox-bank: card status changed"
        );
    }
    Ok(Reply::json(
        StatusCode::OK,
        &Envelope {
            data: row.into_wire()?,
        },
    ))
}

/// `POST /cards/{id}/replacements`.
pub(crate) async fn replace_card(
    store: &Store,
    k: &Keyed,
    card_id: &str,
) -> Result<Reply, ApiError> {
    let mut w = store.write().await?;
    if let Some(reply) = idempotency::prior(&mut w, k).await? {
        return Ok(reply);
    }
    let outcome = order_replacement(&mut w, &k.customer, card_id).await;
    let reply = idempotency::settle(&mut w, k, outcome).await?;
    w.commit().await?;
    Ok(reply)
}

/// Blocks the old card and adds a new one, in transit, with new digits.
async fn order_replacement(
    conn: &mut SqliteConnection,
    customer: &CustomerId,
    card_id: &str,
) -> Result<Reply, ApiError> {
    let old = card(conn, customer, card_id).await?;
    let last4 = format!("{:04}", rand::rng().random_range(0..10_000));
    let name = match old.name.strip_suffix(&old.last4) {
        Some(stem) => format!("{stem}{last4}"),
        None => format!("{} (replacement)", old.name),
    };
    let new_id = format!("card-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let today = Day::today().to_string();
    sqlx::query("UPDATE cards SET status = 'Blocked' WHERE customer_id = ? AND card_id = ?")
        .bind(customer.as_str())
        .bind(card_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO cards (customer_id, card_id, position, name, last4, status, dispatched_on, replaces)
         VALUES (?, ?, (SELECT COALESCE(MAX(position), 0) + 1 FROM cards WHERE customer_id = ?),
                 ?, ?, 'InTransit', ?, ?)",
    )
    .bind(customer.as_str())
    .bind(&new_id)
    .bind(customer.as_str())
    .bind(&name)
    .bind(&last4)
    .bind(&today)
    .bind(card_id)
    .execute(&mut *conn)
    .await?;
    tracing::info!(
        customer = customer.as_str(),
        old = card_id,
        new = %new_id,
        "sandbox-bank: replacement card dispatched"
    );
    Ok(Reply::json(
        StatusCode::CREATED,
        &Envelope {
            data: Card {
                card_id: new_id,
                name,
                last4,
                status: CardStatus::InTransit,
                dispatched_on: Some(today),
            },
        },
    ))
}

// ------------------------------------------------------------- disputes

/// `POST /disputes`.
pub(crate) async fn open_dispute(
    store: &Store,
    k: &Keyed,
    request: &DisputeRequest,
) -> Result<Reply, ApiError> {
    let mut w = store.write().await?;
    if let Some(reply) = idempotency::prior(&mut w, k).await? {
        return Ok(reply);
    }
    let outcome = record_dispute(&mut w, &k.customer, request).await;
    let reply = idempotency::settle(&mut w, k, outcome).await?;
    w.commit().await?;
    Ok(reply)
}

async fn record_dispute(
    conn: &mut SqliteConnection,
    customer: &CustomerId,
    request: &DisputeRequest,
) -> Result<Reply, ApiError> {
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > 64 {
        return Err(ApiError::invalid("`Reason` must be 1 to 64 characters").at("Data.Reason"));
    }
    let date = Day::parse(&request.booking_date).ok_or_else(|| {
        ApiError::invalid(format!(
            "`BookingDate` must be a YYYY-MM-DD date, got `{}`",
            request.booking_date
        ))
        .at("Data.BookingDate")
    })?;
    let currency = &request.amount.currency;
    let minor = amount_to_minor(&request.amount.amount, currency)
        .map_err(|m| ApiError::invalid(m).at("Data.Amount"))?;
    let Some(posting_id) =
        ledger::find_posting(conn, customer, date, minor.saturating_abs(), currency).await?
    else {
        return Err(ApiError::refused(
            codes::TRANSACTION_UNKNOWN,
            format!(
                "no transaction of {} {currency} was booked on {date}",
                minor_to_amount(minor.saturating_abs(), currency)
            ),
        ));
    };
    let dispute_id = short_id("DSP-");
    sqlx::query(
        "INSERT INTO disputes (customer_id, dispute_id, posting_id, reason, created_at)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(customer.as_str())
    .bind(&dispute_id)
    .bind(&posting_id)
    .bind(reason)
    .bind(clock::rfc3339(clock::now_unix()))
    .execute(&mut *conn)
    .await?;
    Ok(Reply::json(
        StatusCode::CREATED,
        &Envelope {
            data: Dispute { dispute_id },
        },
    ))
}

// ------------------------------------------------------ one-time codes

fn valid_binding(binding: &str) -> Result<(), ApiError> {
    if binding.is_empty() || binding.len() > 256 {
        return Err(ApiError::invalid("`Binding` must be 1 to 256 characters").at("Data.Binding"));
    }
    Ok(())
}

/// `POST /one-time-codes`: stores a code bound to `Binding` and "texts" it
/// (the outbox, and an info log line for demos).
pub(crate) async fn send_code(
    store: &Store,
    customer: &CustomerId,
    request: &CodeRequest,
    fixed_code: Option<&str>,
) -> Result<CodeSent, ApiError> {
    if !matches!(request.purpose.as_str(), "transfer" | "update_contact") {
        return Err(
            ApiError::invalid("`Purpose` must be `transfer` or `update_contact`")
                .at("Data.Purpose"),
        );
    }
    valid_binding(&request.binding)?;
    let code = match fixed_code {
        Some(code) => code.to_owned(),
        None => format!("{:06}", rand::rng().random_range(0..1_000_000)),
    };
    let code_id = short_id("OTC-");
    let now = clock::now_unix();
    let expires_at = now + CODE_TTL_SECS;
    let mut w = store.write().await?;
    let recipient: String =
        sqlx::query_scalar("SELECT mobile_number FROM customers WHERE customer_id = ?")
            .bind(customer.as_str())
            .fetch_one(&mut *w)
            .await?;
    sqlx::query(
        "INSERT INTO one_time_codes (customer_id, code_id, purpose, binding, code, expires_at, attempts_left)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(customer.as_str())
    .bind(&code_id)
    .bind(&request.purpose)
    .bind(&request.binding)
    .bind(&code)
    .bind(expires_at)
    .bind(CODE_ATTEMPTS)
    .execute(&mut *w)
    .await?;
    sqlx::query(
        "INSERT INTO outbox (customer_id, recipient, code_id, code, sent_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(customer.as_str())
    .bind(&recipient)
    .bind(&code_id)
    .bind(&code)
    .bind(clock::rfc3339(now))
    .execute(&mut *w)
    .await?;
    w.commit().await?;
    tracing::info!(
        "sandbox-bank: one-time code for {}: {code}",
        customer.as_str()
    );
    Ok(CodeSent {
        code_id,
        expires_at: clock::rfc3339(expires_at),
    })
}

/// `POST /one-time-codes/{id}/verification`.
pub(crate) async fn verify_code(
    store: &Store,
    k: &Keyed,
    code_id: &str,
    check: &CodeCheck,
) -> Result<Reply, ApiError> {
    let shape_ok =
        (4..=8).contains(&check.code.len()) && check.code.bytes().all(|b| b.is_ascii_digit());
    if !shape_ok {
        return Err(ApiError::invalid("`Code` must be 4 to 8 digits").at("Data.Code"));
    }
    valid_binding(&check.binding)?;
    let mut w = store.write().await?;
    if let Some(reply) = idempotency::prior(&mut w, k).await? {
        return Ok(reply);
    }
    let outcome = check_code(&mut w, &k.customer, code_id, check).await;
    let reply = idempotency::settle(&mut w, k, outcome).await?;
    w.commit().await?;
    Ok(reply)
}

/// Compares without an early exit, so timing says nothing about the code.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A code verifies once, for its binding, before it expires, within its
/// attempts; every failed check of a live code uses an attempt. A used,
/// expired or exhausted code answers false with no attempts left.
async fn check_code(
    conn: &mut SqliteConnection,
    customer: &CustomerId,
    code_id: &str,
    check: &CodeCheck,
) -> Result<Reply, ApiError> {
    let row: Option<(String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT binding, code, expires_at, attempts_left, used FROM one_time_codes
         WHERE customer_id = ? AND code_id = ?",
    )
    .bind(customer.as_str())
    .bind(code_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (binding, code, expires_at, attempts_left, used) =
        row.ok_or_else(|| ApiError::not_found(format!("there is no one-time code `{code_id}`")))?;
    let (verified, left) = if used != 0 || attempts_left <= 0 || clock::now_unix() >= expires_at {
        (false, 0)
    } else if same_secret(&check.code, &code) && check.binding == binding {
        sqlx::query("UPDATE one_time_codes SET used = 1 WHERE customer_id = ? AND code_id = ?")
            .bind(customer.as_str())
            .bind(code_id)
            .execute(&mut *conn)
            .await?;
        (true, attempts_left)
    } else {
        sqlx::query(
            "UPDATE one_time_codes SET attempts_left = attempts_left - 1
             WHERE customer_id = ? AND code_id = ?",
        )
        .bind(customer.as_str())
        .bind(code_id)
        .execute(&mut *conn)
        .await?;
        (false, attempts_left - 1)
    };
    Ok(Reply::json(
        StatusCode::OK,
        &Envelope {
            data: CodeVerdict {
                verified,
                attempts_left: Some(u32::try_from(left).unwrap_or(0)),
            },
        },
    ))
}

/// The latest code "texted" to a customer: (CodeId, Code).
pub(crate) async fn latest_code(
    store: &Store,
    customer: &CustomerId,
) -> Result<Option<(String, String)>, ApiError> {
    Ok(sqlx::query_as(
        "SELECT code_id, code FROM outbox WHERE customer_id = ? ORDER BY seq DESC LIMIT 1",
    )
    .bind(customer.as_str())
    .fetch_optional(&store.pool)
    .await?)
}

// -------------------------------------------------------------- contact

/// E.164: `+`, a non-zero digit, then 7 to 14 digits.
fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// A plausible address: one `@`, a local part of 1–64 characters and a
/// dotted domain of non-empty labels, no spaces or control characters.
fn is_plausible_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `PUT /contact-details`.
pub(crate) async fn update_contact(
    store: &Store,
    k: &Keyed,
    change: &ContactChange,
) -> Result<Reply, ApiError> {
    if change.mobile_number.is_none() && change.email_address.is_none() {
        return Err(ApiError::invalid(
            "give `MobileNumber` or `EmailAddress` (or both)",
        ));
    }
    if let Some(m) = &change.mobile_number
        && !is_e164(m)
    {
        return Err(ApiError::invalid(format!(
            "`MobileNumber` must be in E.164 form (+447700900123), got `{m}`"
        ))
        .at("Data.MobileNumber"));
    }
    if let Some(e) = &change.email_address
        && !is_plausible_email(e)
    {
        return Err(
            ApiError::invalid(format!("`EmailAddress` is not an e-mail address: `{e}`"))
                .at("Data.EmailAddress"),
        );
    }
    let mut w = store.write().await?;
    if let Some(reply) = idempotency::prior(&mut w, k).await? {
        return Ok(reply);
    }
    sqlx::query(
        "UPDATE customers SET mobile_number = COALESCE(?, mobile_number),
                              email_address = COALESCE(?, email_address)
         WHERE customer_id = ?",
    )
    .bind(change.mobile_number.as_deref())
    .bind(change.email_address.as_deref())
    .bind(k.customer.as_str())
    .execute(&mut *w)
    .await?;
    let reply = idempotency::settle(&mut w, k, Ok(Reply::empty(StatusCode::NO_CONTENT))).await?;
    w.commit().await?;
    tracing::info!(
        customer = k.customer.as_str(),
        "sandbox-bank: contact details changed"
    );
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_validation() {
        assert!(is_e164("+447700900123"));
        assert!(is_e164("+33612345678"));
        for bad in [
            "447700900123",
            "+0447700900",
            "+44 7700 900123",
            "+1234567",
            "",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
        assert!(is_plausible_email("ada@example.co.uk"));
        for bad in [
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "a@b@c.com",
            "ada@.com",
        ] {
            assert!(!is_plausible_email(bad), "{bad}");
        }
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("123456", "123456"));
        assert!(!same_secret("123456", "123457"));
        assert!(!same_secret("123456", "12345"));
    }
}
