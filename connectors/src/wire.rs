//! The JSON bodies of the bank API (`connectors/api/bank-api.yaml`), as
//! serde types shared by the HTTP client ([`crate::http`]) and the sandbox
//! bank. Field names follow the Open Banking casing; unknown fields are
//! ignored, missing required ones are errors. Amounts travel as decimal
//! strings and are converted to exact minor units by [`amount_to_minor`].

use serde::{Deserialize, Serialize};

/// Path prefix of every endpoint.
pub const BASE_PATH: &str = "/open-banking/v3.1";
pub const CUSTOMER_HEADER: &str = "x-customer-id";
pub const IDEMPOTENCY_HEADER: &str = "x-idempotency-key";
pub const INTERACTION_HEADER: &str = "x-fapi-interaction-id";

/// `{"Data": …}`: every success body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    #[serde(rename = "Data")]
    pub data: T,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Amount {
    pub amount: String,
    pub currency: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CreditDebit {
    Credit,
    Debit,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Account {
    pub account_id: String,
    pub currency: String,
    pub nickname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_sub_type: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Accounts {
    pub account: Vec<Account>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BalanceType {
    InterimBooked,
    InterimAvailable,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Balance {
    #[serde(rename = "Type")]
    pub kind: BalanceType,
    pub amount: Amount,
    pub credit_debit_indicator: CreditDebit,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Balances {
    pub balance: Vec<Balance>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Transaction {
    pub transaction_id: String,
    pub booking_date: String,
    pub amount: Amount,
    pub credit_debit_indicator: CreditDebit,
    pub transaction_information: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Transactions {
    pub transaction: Vec<Transaction>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Links {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A transactions page: `{"Data": {"Transaction": […]}, "Links": {…}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransactionPage {
    #[serde(rename = "Data")]
    pub data: Transactions,
    #[serde(rename = "Links")]
    pub links: Links,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Payee {
    pub payee_id: String,
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iban: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Payees {
    pub payee: Vec<Payee>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DebtorAccount {
    pub account_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Initiation {
    pub instruction_identification: String,
    pub debtor_account: DebtorAccount,
    pub payee_id: String,
    pub instructed_amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentRequest {
    pub initiation: Initiation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentStatus {
    Pending,
    AcceptedSettlementInProcess,
    AcceptedSettlementCompleted,
    Rejected,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DomesticPayment {
    pub domestic_payment_id: String,
    pub status: PaymentStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub creation_date_time: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CardStatus {
    Active,
    Frozen,
    Blocked,
    InTransit,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Card {
    pub card_id: String,
    pub name: String,
    pub last4: String,
    pub status: CardStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatched_on: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Cards {
    pub card: Vec<Card>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CardStatusChange {
    pub status: CardStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DisputeRequest {
    pub amount: Amount,
    pub booking_date: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Dispute {
    pub dispute_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CodeRequest {
    pub purpose: String,
    pub binding: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CodeSent {
    pub code_id: String,
    pub expires_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CodeCheck {
    pub code: String,
    pub binding: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CodeVerdict {
    pub verified: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts_left: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContactChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorDetail {
    pub error_code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorResponse {
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub message: String,
    pub errors: Vec<ErrorDetail>,
}

/// Error codes the client acts on.
pub mod codes {
    pub const CONSENT_MISMATCH: &str = "UK.OBIE.Resource.ConsentMismatch";
    pub const INSUFFICIENT_FUNDS: &str = "BANKBOT.InsufficientFunds";
    pub const LIMIT_EXCEEDED: &str = "BANKBOT.LimitExceeded";
    pub const PAYEE_UNKNOWN: &str = "BANKBOT.PayeeUnknown";
    pub const CARD_BLOCKED: &str = "BANKBOT.CardBlocked";
    pub const TRANSACTION_UNKNOWN: &str = "BANKBOT.TransactionUnknown";
    pub const NOT_FOUND: &str = "UK.OBIE.Resource.NotFound";
    pub const FIELD_INVALID: &str = "UK.OBIE.Field.Invalid";
    pub const HEADER_MISSING: &str = "UK.OBIE.Header.Missing";
    pub const UNEXPECTED: &str = "UK.OBIE.UnexpectedError";
    pub const IN_FLIGHT: &str = "BANKBOT.RequestInFlight";
}

/// Digits after the decimal point of a currency (ISO 4217 minor unit).
pub fn minor_digits(currency: &str) -> Option<u32> {
    match currency {
        "JPY" | "KRW" | "ISK" | "CLP" | "VND" | "HUF" => Some(0),
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" | "LYD" | "IQD" => Some(3),
        c if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => Some(2),
        _ => None,
    }
}

/// `"1234.5"` GBP → 123450. Refuses more fraction digits than the currency
/// has, signs other than a leading `-`, exponents, and overflow.
pub fn amount_to_minor(amount: &str, currency: &str) -> Result<i64, String> {
    let digits = minor_digits(currency).ok_or_else(|| format!("`{currency}` is not a currency"))?;
    let (negative, rest) = match amount.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, amount),
    };
    let (whole, frac) = rest.split_once('.').unwrap_or((rest, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > 13
        || !all_digits(whole)
        || !all_digits(frac)
        || (rest.contains('.') && frac.is_empty())
    {
        return Err(format!("`{amount}` is not a decimal amount"));
    }
    if frac.len() > digits as usize {
        return Err(format!(
            "`{amount}` has more than {digits} decimal places for {currency}"
        ));
    }
    let scale = 10i64.pow(digits);
    let whole: i64 = whole
        .parse()
        .map_err(|_| format!("`{amount}` is out of range"))?;
    let mut f: i64 = if frac.is_empty() {
        0
    } else {
        frac.parse()
            .map_err(|_| format!("`{amount}` is out of range"))?
    };
    f *= 10i64.pow(digits - frac.len() as u32);
    let minor = whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(f))
        .ok_or_else(|| format!("`{amount}` is out of range"))?;
    Ok(if negative { -minor } else { minor })
}

/// 123450 GBP → `"1234.50"`.
pub fn minor_to_amount(minor: i64, currency: &str) -> String {
    let digits = minor_digits(currency).unwrap_or(2);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if digits == 0 {
        return format!("{sign}{abs}");
    }
    let scale = 10u64.pow(digits);
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = digits as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_trip_exactly() {
        assert_eq!(amount_to_minor("1234.5", "GBP"), Ok(123_450));
        assert_eq!(amount_to_minor("0.01", "GBP"), Ok(1));
        assert_eq!(amount_to_minor("-12", "EUR"), Ok(-1200));
        assert_eq!(amount_to_minor("500", "JPY"), Ok(500));
        assert_eq!(amount_to_minor("1.234", "KWD"), Ok(1234));
        for bad in ["", "1.", ".5", "1.005", "1e3", "+1", "1,000", "0x10", "--1"] {
            assert!(amount_to_minor(bad, "GBP").is_err(), "{bad}");
        }
        assert!(amount_to_minor("1.5", "JPY").is_err());
        assert!(amount_to_minor("1", "gbp").is_err());
        assert!(amount_to_minor("9999999999999.99", "GBP").is_ok());
        assert!(amount_to_minor("99999999999999", "GBP").is_err());
        assert_eq!(minor_to_amount(123_450, "GBP"), "1234.50");
        assert_eq!(minor_to_amount(-5, "GBP"), "-0.05");
        assert_eq!(minor_to_amount(500, "JPY"), "500");
        assert_eq!(minor_to_amount(1234, "KWD"), "1.234");
        for m in [-1_000_001, -1, 0, 7, 99, 100, 123_456_789] {
            assert_eq!(amount_to_minor(&minor_to_amount(m, "GBP"), "GBP"), Ok(m));
        }
    }
}
