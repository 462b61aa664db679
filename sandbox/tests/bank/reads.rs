use bankbot_connectors::wire::{
    Accounts, BalanceType, Balances, CardStatus, Cards, CreditDebit, Envelope, Payees,
    TransactionPage,
};

use crate::helpers::{ALL_TIME, spawn_bank};

#[tokio::test]
async fn a_new_customer_is_enrolled_with_the_demo_data() {
    let bank = spawn_bank().await;
    let alice = bank.client("alice");

    let r = alice.get("/accounts").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let accounts: Envelope<Accounts> = r.wire();
    let ids: Vec<_> = accounts
        .data
        .account
        .iter()
        .map(|a| a.account_id.as_str())
        .collect();
    assert_eq!(ids, ["acc-current", "acc-savings"]);
    let current = &accounts.data.account[0];
    assert_eq!(current.nickname, "Current account");
    assert_eq!(current.currency, "GBP");
    assert_eq!(current.aliases, ["current", "main", "everyday"]);

    let r = alice.get("/accounts/acc-current/balances").await;
    let balances: Envelope<Balances> = r.wire();
    let kinds: Vec<_> = balances.data.balance.iter().map(|b| b.kind).collect();
    assert_eq!(
        kinds,
        [BalanceType::InterimBooked, BalanceType::InterimAvailable]
    );
    for b in &balances.data.balance {
        assert_eq!(b.amount.amount, "1234.56");
        assert_eq!(b.amount.currency, "GBP");
        assert_eq!(b.credit_debit_indicator, CreditDebit::Credit);
    }
    assert_eq!(alice.balance("acc-savings").await, 500_000);

    let payees: Envelope<Payees> = alice.get("/payees").await.wire();
    let names: Vec<_> = payees.data.payee.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["Mum", "Pierre Dubois", "Oakfield Lettings"]);
    assert_eq!(payees.data.payee[2].aliases, ["landlord", "rent"]);

    let cards: Envelope<Cards> = alice.get("/cards").await.wire();
    assert_eq!(cards.data.card.len(), 2);
    assert_eq!(cards.data.card[0].name, "Visa debit ending 4471");
    assert!(
        cards
            .data
            .card
            .iter()
            .all(|c| c.status == CardStatus::Active)
    );

    // The history: memory.rs's transactions, newest first, then the opening.
    let page: TransactionPage = alice
        .get(&format!("/accounts/acc-current/transactions?{ALL_TIME}"))
        .await
        .wire();
    let ids: Vec<_> = page
        .data
        .transaction
        .iter()
        .map(|t| t.transaction_id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["t6", "t5", "t4", "t3", "t2", "t1", "open-acc-current"]
    );
    let t4 = &page.data.transaction[2];
    assert_eq!(t4.transaction_information, "Salary ACME Ltd");
    assert_eq!(t4.amount.amount, "2100.00");
    assert_eq!(t4.credit_debit_indicator, CreditDebit::Credit);
    let t6 = &page.data.transaction[0];
    assert_eq!(t6.amount.amount, "4.50");
    assert_eq!(t6.credit_debit_indicator, CreditDebit::Debit);
    assert!(page.links.next.is_none());

    // The date filter includes both ends.
    let day = &t6.booking_date;
    let page: TransactionPage = alice
        .get(&format!(
            "/accounts/acc-current/transactions?fromBookingDate={day}&toBookingDate={day}"
        ))
        .await
        .wire();
    assert_eq!(page.data.transaction.len(), 1);
    assert_eq!(page.data.transaction[0].transaction_id, "t6");

    // A second customer gets the same ids and their own copy.
    let bob = bank.client("bob");
    assert_eq!(bob.balance("acc-current").await, 123_456);
    let audit = bank.audit().await;
    assert_eq!(audit["balances"]["alice/acc-current"], 123_456);
    assert_eq!(audit["balances"]["bob/acc-savings"], 500_000);
    assert_eq!(audit["postings_sum_minor"], 0);
}

#[tokio::test]
async fn transactions_come_in_pages_with_an_opaque_next_link() {
    let bank = spawn_bank().await;
    let alice = bank.client("alice");
    let base = format!("/accounts/acc-current/transactions?{ALL_TIME}");

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut url = format!("{base}&pageSize=2");
    loop {
        let r = alice.get(&url).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let page: TransactionPage = r.wire();
        sizes.push(page.data.transaction.len());
        seen.extend(page.data.transaction.into_iter().map(|t| t.transaction_id));
        match page.links.next {
            Some(next) => url = format!("{base}&pageSize=2&page={next}"),
            None => break,
        }
    }
    assert_eq!(sizes, [2, 2, 2, 1]);
    let whole: TransactionPage = alice.get(&base).await.wire();
    let all: Vec<_> = whole
        .data
        .transaction
        .into_iter()
        .map(|t| t.transaction_id)
        .collect();
    assert_eq!(seen, all);

    // A full last page has no next link either.
    let page: TransactionPage = alice.get(&format!("{base}&pageSize=7")).await.wire();
    assert_eq!(page.data.transaction.len(), 7);
    assert!(page.links.next.is_none());

    for bad in [
        format!("{base}&pageSize=0"),
        format!("{base}&pageSize=101"),
        format!("{base}&pageSize=ten"),
        format!("{base}&page=not-a-token"),
        "/accounts/acc-current/transactions?fromBookingDate=2024-02-30&toBookingDate=2024-03-01"
            .to_owned(),
        "/accounts/acc-current/transactions?fromBookingDate=2024-03-02&toBookingDate=2024-03-01"
            .to_owned(),
        "/accounts/acc-current/transactions?toBookingDate=2024-03-01".to_owned(),
    ] {
        let r = alice.get(&bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.error_code(), "UK.OBIE.Field.Invalid");
    }
    let r = alice
        .get(&format!("/accounts/acc-nope/transactions?{ALL_TIME}"))
        .await;
    assert_eq!(r.status, 404);
}
