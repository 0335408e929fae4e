//! `rero camera`: a board camera's state, or (`--snapshot FILE`) its newest
//! picture saved to a file.

use std::path::Path;

use hyper::Method;
use rerod_wire::CameraStatusResponse;

use crate::api::{Body, Client, Error, print_json};

pub async fn camera(client: &Client, board: Option<String>, snapshot: Option<&Path>, json: bool) -> Result<(), Error> {
    // A public camera needs no login; with one, the board defaults to the booking in progress.
    let signed_in = client.has_token();
    let board = match (board, signed_in) {
        (Some(board), _) => board,
        (None, true) => crate::calendar::default_board(client, None).await?,
        (None, false) => "0".to_owned(),
    };
    let path = format!("/devices/camera/{}", crate::api::query_value(&board));
    let Some(file) = snapshot else {
        let status: CameraStatusResponse = client.get(&path, signed_in).await?;
        if json {
            return print_json(&status);
        }
        let camera = &status.camera;
        let plural = if camera.viewers == 1 { "" } else { "s" };
        println!(
            "{}: camera {}{}, visibility {}, {} viewer{plural}",
            status.device,
            camera.state,
            camera.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
            camera.visibility,
            camera.viewers
        );
        return Ok(());
    };
    let jpeg = client.send(Method::GET, &format!("{path}/snapshot"), Body::Empty, signed_in).await?;
    std::fs::write(file, &jpeg).map_err(|e| Error::message(format!("writing {}: {e}", file.display())))?;
    if json {
        return print_json(&serde_json::json!({ "success": true, "board": board, "file": file, "bytes": jpeg.len() }));
    }
    println!("Saved the camera's picture of {board} ({} bytes) to {}", jpeg.len(), file.display());
    Ok(())
}
