//! Many clients at once: the store must never hand one slot to two people.

use serde_json::json;

use crate::util::{Daemon, Options, UTC_LAB_MANY_ACCOUNTS, race_outcome, utc_date};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_clients_racing_for_one_slot_yield_exactly_one_booking() {
    let daemon = Daemon::start_with(Options::config(UTC_LAB_MANY_ACCOUNTS));
    let c = daemon.client();
    let mut tokens = Vec::new();
    for i in 0..100 {
        tokens.push(c.user(&format!("racer{i}@example.com")).await);
    }
    let day = utc_date(1).to_string();
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let day = day.clone();
            tokio::spawn(async move { c.post_auth("/book-slot", &token, &json!({"slot_id": 12, "date": day})).await })
        })
        .collect();
    assert_eq!(race_outcome(tasks, 12).await, (1, 99));
    let slots = c.get(&format!("/slots?date={day}")).await.expect(200);
    assert_eq!(slots["booked_slots"], json!([12]));
    assert_eq!(c.get("/stats").await.expect(200)["bookings"]["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_users_booking_hundred_different_slots_all_succeed() {
    let daemon = Daemon::start_with(Options::config(UTC_LAB_MANY_ACCOUNTS));
    let c = daemon.client();
    let mut tokens = Vec::new();
    for i in 0..100 {
        tokens.push(c.user(&format!("user{i}@example.com")).await);
    }
    let tasks: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            // Slots 0..23 of the next five days.
            let body = json!({"slot_id": i % 24, "date": utc_date(1 + (i / 24) as i64).to_string()});
            tokio::spawn(async move { c.post_auth("/book-slot", &token, &body).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect(200);
    }
    assert_eq!(c.get("/stats").await.expect(200)["bookings"]["total"], 100);
    assert_eq!(c.booked(utc_date(1)).await.len(), 24);
    assert_eq!(c.booked(utc_date(5)).await.len(), 4);
}
