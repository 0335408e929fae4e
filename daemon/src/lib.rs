//! rerod: the remote-lab booking daemon, as a library the `rerod` binary runs.
//! See the README's Architecture section for the code map.

pub mod auth;
pub mod booking;
pub mod config;
pub mod store;
