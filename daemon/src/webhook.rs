//! The health webhook: when a board turns `failing`, its `[devices.health]
//! webhook` gets a POST of a [`HealthAlert`] (JSON).
//!
//! Plain `http://` only, written by hand over a TCP stream: rerod carries
//! no HTTP client and no TLS stack, and an alert relay on the lab's own
//! network needs neither. Each alert is sent in its own task with a
//! deadline, so a slow or dead receiver never holds up a check or another
//! alert; a failure is logged, and the log line, the metric and `/health`
//! say the same thing anyway.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::WebhookUrl;
use crate::devices::{Health, HealthEvent};
use crate::wire::{self, HealthAlert};

/// Connecting, sending and reading the status line, together.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The most of the answer read, looking for its status line.
const MAX_STATUS_LINE: usize = 1024;

/// Sends an alert for every board that turns failing, while the daemon runs.
pub fn start(app: Arc<App>) -> JoinHandle<()> {
    let mut events = app.devices.subscribe_health();
    tokio::spawn(async move {
        loop {
            let (device, reason, check) = match events.recv().await {
                Ok(HealthEvent::Changed { device, after: Health::Failing { reason }, check, .. }) => {
                    (device, reason, check)
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let Some(board) = app.devices.board(&device) else { continue };
            let config = board.config();
            let Some(url) = config.health.as_ref().and_then(|h| h.webhook.clone()) else { continue };
            let alert = HealthAlert {
                event: "board_failing".to_owned(),
                device: device.clone(),
                name: config.name.clone(),
                model: config.model.clone(),
                health: "failing".to_owned(),
                reason: Some(reason),
                timestamp: wire::utc(app.now()),
                check: check.as_deref().map(wire::check_json),
            };
            tokio::spawn(send(url, alert));
        }
    })
}

async fn send(url: WebhookUrl, alert: HealthAlert) {
    let body = serde_json::to_vec(&alert).expect("an alert always serializes");
    match tokio::time::timeout(TIMEOUT, post(&url, &body)).await {
        Ok(Ok(status)) if (200..300).contains(&status) => {
            tracing::info!(device = %alert.device, webhook = %url, status, "health alert sent")
        }
        Ok(Ok(status)) => {
            tracing::warn!(device = %alert.device, webhook = %url, status, "the health webhook refused the alert")
        }
        Ok(Err(error)) => {
            tracing::warn!(device = %alert.device, webhook = %url, %error, "could not send the health alert")
        }
        Err(_) => {
            tracing::warn!(device = %alert.device, webhook = %url, "the health webhook did not answer within 5 s")
        }
    }
}

/// One HTTP/1.1 POST; answers the status code.
async fn post(url: &WebhookUrl, body: &[u8]) -> std::io::Result<u16> {
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let mut stream = tokio::net::TcpStream::connect((host, url.port)).await?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: rerod/{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.host,
        url.port,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 256];
    while !answer.windows(2).any(|w| w == b"\r\n") && answer.len() < MAX_STATUS_LINE {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&answer);
    // "HTTP/1.1 204 No Content"
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "the answer is not HTTP"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_alert_is_one_json_post() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let receiver = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            loop {
                let n = socket.read(&mut chunk).await.unwrap();
                request.extend_from_slice(&chunk[..n]);
                if n == 0 || request.ends_with(b"}") {
                    break;
                }
            }
            socket.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
            String::from_utf8(request).unwrap()
        });
        let url = WebhookUrl { host: "127.0.0.1".into(), port, path: "/hook?lab=1".into() };
        let alert = HealthAlert {
            event: "board_failing".into(),
            device: "arm-1".into(),
            name: "Arm".into(),
            model: "uno".into(),
            health: "failing".into(),
            reason: Some("no READY".into()),
            timestamp: "2026-11-24T10:30:00.000000Z".into(),
            check: None,
        };
        let body = serde_json::to_vec(&alert).unwrap();
        assert_eq!(post(&url, &body).await.unwrap(), 204);
        let request = receiver.await.unwrap();
        assert!(request.starts_with("POST /hook?lab=1 HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("Content-Type: application/json\r\n"));
        let (_, json) = request.split_once("\r\n\r\n").unwrap();
        assert_eq!(serde_json::from_str::<HealthAlert>(json).unwrap(), alert);
    }
}
