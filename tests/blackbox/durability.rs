//! What the daemon acknowledged survives `kill -9`.

use serde_json::json;

use crate::util::{Daemon, utc_date};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_bookings_and_tokens_survive_kill_9() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let token = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    // Acknowledged concurrently, so they share transactions.
    let tasks: Vec<_> = (0..24)
        .map(|slot| {
            let token = if slot % 2 == 0 { token.clone() } else { bob.clone() };
            let body = json!({"slot_id": slot, "date": utc_date(2).to_string()});
            tokio::spawn(async move { c.post_auth("/book-slot", &token, &body).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect(200);
    }
    c.post_auth("/cancel-slot", &token, &json!({"slot_id": 0, "date": utc_date(2).to_string()})).await.expect(200);

    let daemon = daemon.kill9_and_restart();
    let c = daemon.client();
    let booked = c.booked(utc_date(2)).await;
    assert_eq!(booked, (1..24).collect::<Vec<u64>>());
    // The generated JWT secret was kept in the store: the old token still works.
    let mine = c.get_auth("/my-bookings", &token).await.expect(200);
    assert_eq!(mine["total_bookings"], 11);
    c.login("bob@example.com", "password1").await;
}

#[tokio::test]
async fn graceful_shutdown_on_sigterm_exits_zero_and_keeps_data() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let token = c.user("ada@example.com").await;
    c.post_auth("/book-slot", &token, &json!({"slot_id": 7, "date": utc_date(1).to_string()})).await.expect(200);
    let mut daemon = daemon;
    let status = daemon.terminate();
    assert!(status.success(), "exit status {status:?}");
    daemon.log_until(|log| log.contains("\"stopped\""));
    let daemon = daemon.restart();
    assert_eq!(daemon.client().booked(utc_date(1)).await, [7]);
}
